"""xlocal.dask against a real distributed cluster: 2 worker processes of 1 thread."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import pickle
import re
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip(
    "distributed",
    reason="distributed is not installed here: psutil, which it needs, does not load "
    "on PyPy 3.9 (see the test extra)",
)

import dask_tasks as dt  # noqa: E402
from engines import readme_example, run_script  # noqa: E402

import xlocal.dask as xdask  # noqa: E402
from xlocal.portable import (  # noqa: E402
    CARRIER_KEY,
    SIGNATURE_KEY,
    CarrierError,
    UnportableError,
)

TIMEOUT = 60
NOTHING: dict[str, Any] = {}
#: The workers' signing key, as their environment gives it, and as bytes.
KEY_VARIABLE = "XLOCAL_DASK_SIGNING_KEY"
KEY_TEXT = "the secret the tests' signed cluster shares"
KEY = KEY_TEXT.encode()
#: The older keys it still believes (keys being rotated), separated by whitespace.
OLD_KEYS_VARIABLE = "XLOCAL_DASK_OLD_SIGNING_KEYS"
OLD_KEYS = [b"older-secret", b"oldest-secret"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A real LocalCluster: 2 worker processes with 1 thread each, on 127.0.0.1."""
    with distributed.LocalCluster(
        processes=True,
        n_workers=2,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=":0",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    """An xlocal.dask.Client connected to the cluster."""
    with xdask.Client(cluster, timeout=TIMEOUT) as connected:
        yield connected


@pytest.fixture(scope="module")
def signed_cluster() -> Iterator[Any]:
    """A real LocalCluster of 1 worker process whose environment gives it a key, and
    two older keys it still believes."""
    with distributed.LocalCluster(
        processes=True,
        n_workers=1,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=":0",
        env={
            KEY_VARIABLE: KEY_TEXT,
            OLD_KEYS_VARIABLE: " older-secret\n oldest-secret",
        },
    ) as running:
        yield running


@pytest.fixture(scope="module")
def signed_client(signed_cluster: Any) -> Iterator[Any]:
    """An xlocal.dask.Client of the signed cluster that signs with its key."""
    with xdask.Client(
        signed_cluster, timeout=TIMEOUT, set_as_default=False, signing_key=KEY
    ) as connected:
        yield connected


def sees(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return result["request"], result["local_only"]


def sees_async(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a coroutine task (``aseen``) saw, having checked its views agree: the
    same before and after its awaits, and its own binding inside."""
    assert result["first"] == result["request"], result
    assert result["inside"] == {**result["request"], "trace": f"{result['tag']}-inside"}
    return sees(result)


def test_each_task_sees_exactly_its_own_bindings(client: Any) -> None:
    """Many tasks with different bindings on two reused workers see only their own."""
    futures = []
    for i in range(40):
        if i % 4 == 3:
            futures.append((None, client.submit(dt.seen, i)))
            continue
        with dt.request(user_id=i, tenant=f"t{i}", db=i), dt.local_only(i=i):
            futures.append((i, client.submit(dt.seen, i)))
    results = [f.result(timeout=TIMEOUT) for _, f in futures]
    pids = set()
    for (i, _), value in zip(futures, results):
        pids.add(value["pid"])
        expected = NOTHING if i is None else {"user_id": i, "tenant": f"t{i}"}
        assert sees(value) == (expected, NOTHING), value
    assert len(pids) <= 2


def test_map_carries_the_bindings(client: Any) -> None:
    """Client.map carries the bindings to every task it makes."""
    with dt.request(user_id=1, db="conn"), dt.local_only(x=1):
        first = client.map(dt.seen, range(6))
    with dt.request(user_id=2):
        second = client.map(dt.seen, range(6))
    unbound = client.map(dt.seen, range(6))
    for futures, expected in ((first, {"user_id": 1}), (second, {"user_id": 2})):
        for value in client.gather(futures):
            assert sees(value) == (expected, NOTHING)
    assert [sees(v) for v in client.gather(unbound)] == [(NOTHING, NOTHING)] * 6


def test_the_same_pure_call_under_other_bindings_gets_another_key(client: Any) -> None:
    """A pure call is one task per set of bindings, never another request's result."""
    with dt.request(user_id=1):
        a = client.submit(dt.pure_user, 10)
        a_again = client.submit(dt.pure_user, 10)
        [m1] = client.map(dt.pure_user, [10])
    with dt.request(user_id=2):
        b = client.submit(dt.pure_user, 10)
        [m2] = client.map(dt.pure_user, [10])
    assert a.key == a_again.key
    assert len({a.key, b.key}) == 2
    assert len({m1.key, m2.key}) == 2
    for key in (a.key, b.key, m1.key, m2.key):
        assert key.startswith("pure_user-")
    assert (a.result(), b.result()) == ((10, 1), (10, 2))
    assert (m1.result(), m2.result()) == ((10, 1), (10, 2))


def test_delayed_carries_the_bindings_of_each_call(client: Any) -> None:
    """Each call of a delayed function carries its bindings; both compute paths work."""
    seen = xdask.delayed(dt.seen)
    with dt.request(user_id=1, db="conn"), dt.local_only(x=1):
        one = seen("one")
    with dt.request(user_id=2):
        two = seen("two")
    three = seen("three")
    got = dask.compute(one, two, three)
    futures = client.compute([one, two, three])
    assert [sees(v) for v in got] == [
        ({"user_id": 1}, NOTHING),
        ({"user_id": 2}, NOTHING),
        (NOTHING, NOTHING),
    ]
    assert [sees(v) for v in client.gather(futures)] == [sees(v) for v in got]
    assert one.key.startswith("seen-")


def test_pure_delayed_calls_get_keys_per_binding(client: Any) -> None:
    """With pure=True, delayed keys differ between bindings and match within them."""
    pure_user = xdask.delayed(pure=True)(dt.pure_user)
    with dt.request(user_id=1):
        a, a_again = pure_user(10), pure_user(10)
    with dt.request(user_id=2):
        b = pure_user(10)
    assert a.key == a_again.key != b.key
    assert a.key.startswith("pure_user-")
    assert dask.compute(a, b) == ((10, 1), (10, 2))


@pytest.mark.parametrize("fails", [dt.fails, dt.afails])
def test_raising_task_leaves_nothing_bound(client: Any, fails: Any) -> None:
    """A task (or coroutine) that raises leaves nothing bound on its worker."""
    for i in range(4):
        with dt.request(user_id=i):
            failing = client.submit(fails, i, pure=False)
        with pytest.raises(ValueError, match=f"task failed on purpose: {i}"):
            failing.result(timeout=TIMEOUT)
    after = client.map(dt.seen, range(8), pure=False)
    assert [sees(v) for v in client.gather(after)] == [(NOTHING, NOTHING)] * 8
    # Plain distributed submits, which carry and hide nothing, see what the worker
    # processes themselves have bound after all those tasks: nothing.
    plain = distributed.Client.map(client, dt.seen, range(8), pure=False)
    assert [sees(v) for v in client.gather(plain)] == [(NOTHING, NOTHING)] * 8


def test_tasks_submitted_from_tasks_carry_the_bindings_on(client: Any) -> None:
    """xlocal.dask.get_client() and worker_client() inside a task carry its bindings."""
    with dt.request(user_id=3, tenant="acme"), dt.local_only(x=1):
        outer = client.submit(dt.spawns, "s", pure=False).result(timeout=TIMEOUT)
    carried = {"user_id": 3, "tenant": "acme"}
    assert sees(outer) == (carried, NOTHING)
    plain, nested, mapped = outer["children"]
    assert sees(plain) == (carried, NOTHING)
    assert sees(nested) == ({**carried, "trace": "s-nested"}, NOTHING)
    assert sees(mapped) == (carried, NOTHING)


def test_an_unencodable_value_fails_at_submit(client: Any) -> None:
    """submit, map and a delayed call raise for a value that cannot be encoded."""
    match = r"^cannot carry 'user_id' of <xlocal 'tests.dask.request'>"
    with dt.request(user_id=object()):
        with pytest.raises(UnportableError, match=match):
            client.submit(dt.seen)
        with pytest.raises(UnportableError, match=match):
            client.map(dt.seen, [1])
        with pytest.raises(UnportableError, match=match):
            xdask.delayed(dt.seen)()


def test_carried_keeps_the_name_and_runs_locally() -> None:
    """A carried function keeps its name (a partial's function's, as Dask's keys do),
    and runs in place seeing the carried view."""
    with dt.request(user_id=1, db="conn"), dt.local_only(x=1):
        job = xdask.carried(dt.seen)
        assert sees(job("here")) == ({"user_id": 1}, NOTHING)
        assert dt.request.db == "conn"
    assert job.__name__ == "seen"
    assert job.__doc__ == dt.seen.__doc__
    assert xdask.carried(functools.partial(dt.seen, 1)).__name__ == "seen"
    carried = json.loads(job.carrier[CARRIER_KEY])["b"]
    assert carried == {"tests.dask.request": {"user_id": "1"}}
    assert sees(job()) == ({"user_id": 1}, NOTHING)
    again = xdask.carried(job)  # carried anew, with the bindings of now: none
    assert again.__wrapped__ is dt.seen
    assert sees(again()) == (NOTHING, NOTHING)
    assert "seen" in repr(job)


def test_delayed_keeps_the_function_s_name() -> None:
    """xlocal.dask.delayed(func) keeps the function's name, docstring and signature."""
    call = xdask.delayed(dt.seen)
    assert call.__name__ == "seen"
    assert call.__doc__ == dt.seen.__doc__
    assert call.__wrapped__ is dt.seen


def test_misuse_is_refused() -> None:
    """Things that are not functions are refused with a clear message."""
    with pytest.raises(TypeError, match=r"^xlocal.dask needs a callable to submit"):
        xdask.carried(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^xlocal.dask.delayed\(\) takes a function"):
        xdask.delayed(42)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        xdask.nothing  # type: ignore[attr-defined] # noqa: B018


def test_the_readme_example_runs(tmp_path: Any) -> None:
    """The README's Dask example prints what it says, on its own real cluster."""
    files, expected = readme_example("Dask")
    assert sorted(files) == ["myapp.py", "run.py"]
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    assert run_script("run.py", tmp_path, {}) == expected
    assert len(expected) == 5


def test_workers_in_this_process_see_only_what_they_carry() -> None:
    """With worker threads in the submitting process, tasks see only what they carry,
    coroutines that interleave on the worker's loop too."""
    cluster = distributed.LocalCluster(
        processes=False, n_workers=1, threads_per_worker=4, dashboard_address=":0"
    )
    with cluster, xdask.Client(cluster, timeout=TIMEOUT) as client:
        with dt.request(user_id=1, db="conn"), dt.local_only(x=1):
            bound = client.map(dt.seen, range(8))
            spawned = client.submit(dt.spawns, "in", pure=False)
        unbound = client.map(dt.seen, range(8, 16))
        assert [sees(v) for v in client.gather(bound)] == [
            ({"user_id": 1}, NOTHING)
        ] * 8
        assert [sees(v) for v in client.gather(unbound)] == [(NOTHING, NOTHING)] * 8
        outer = spawned.result(timeout=TIMEOUT)
        assert [sees(child) for child in outer["children"]] == [
            ({"user_id": 1}, NOTHING),
            ({"user_id": 1, "trace": "in-nested"}, NOTHING),
            ({"user_id": 1}, NOTHING),
        ]
        meeting = []
        for i in range(4):
            with dt.request(user_id=i), dt.local_only(x=i):
                meeting.append(client.submit(dt.meets, "in", 4, i, pure=False))
        for i, met in enumerate(client.gather(meeting)):
            assert sees(met) == ({"user_id": i}, NOTHING)
            assert met["inside"] == {"user_id": i, "trace": f"{i}-inside"}
        wrapped = xdask._Carrying(client)
        assert repr(wrapped) == f"<carrying {client!r}>"
        assert wrapped.scheduler_info() == client.scheduler_info()


# -- coroutine functions ---------------------------------------------------------------


class AsyncCall:
    """An object whose ``__call__`` is a coroutine function."""

    async def __call__(self, tag: Any = None) -> dict[str, Any]:
        return dt.view()


async def agen(tag: Any = None) -> AsyncIterator[Any]:
    yield tag


def gen(tag: Any = None) -> Iterator[Any]:
    yield tag


def test_coroutine_functions_are_awaited_in_their_bindings(client: Any) -> None:
    """submit, map, a partial and delayed of a coroutine function: the worker awaits
    it with the carried bindings, and what it binds stays in it."""
    with dt.request(user_id=5, tenant="acme", db="conn"), dt.local_only(x=1):
        one = client.submit(dt.aseen, "one")
        mapped = client.map(dt.aseen, ["m1", "m2"])
        partial = client.submit(functools.partial(dt.aseen, "partial"))
        later = xdask.delayed(dt.aseen)("later")
    with dt.request(user_id=6):
        other = client.submit(dt.aseen, "one")
    unbound = client.submit(dt.aseen, "unbound")
    carried = {"user_id": 5, "tenant": "acme"}
    for future in (one, *mapped, partial):
        assert sees_async(future.result(timeout=TIMEOUT)) == (carried, NOTHING)
    assert sees_async(dask.compute(later)[0]) == (carried, NOTHING)
    assert sees_async(other.result(timeout=TIMEOUT)) == ({"user_id": 6}, NOTHING)
    assert sees_async(unbound.result(timeout=TIMEOUT)) == (NOTHING, NOTHING)
    assert one.key != other.key
    for key in (one.key, partial.key, later.key):
        assert key.startswith("aseen-")


def test_coroutine_functions_submitted_from_tasks_are_awaited(client: Any) -> None:
    """get_client() and worker_client() inside a task submit coroutine functions that
    the worker awaits with the task's bindings."""
    with dt.request(user_id=3, tenant="acme"), dt.local_only(x=1):
        spawned = client.submit(dt.spawns, "a", dt.aseen, pure=False)
        outer = spawned.result(timeout=TIMEOUT)
    carried = {"user_id": 3, "tenant": "acme"}
    assert sees(outer) == (carried, NOTHING)
    plain, nested, mapped = outer["children"]
    assert sees_async(plain) == (carried, NOTHING)
    assert sees_async(nested) == ({**carried, "trace": "a-nested"}, NOTHING)
    assert sees_async(mapped) == (carried, NOTHING)


def test_a_carried_coroutine_function_is_one_to_dask() -> None:
    """What carried() makes of a coroutine function is one by Dask's test (and by
    inspect's from Python 3.12); a call gives a coroutine that runs in the bindings,
    and only inside them, however it is stepped."""
    from distributed.utils import iscoroutinefunction  # noqa: PLC0415

    with dt.request(user_id=1, db="conn"), dt.local_only(x=1):
        jobs = [
            xdask.carried(dt.aseen),
            xdask.carried(functools.partial(dt.aseen, "p")),
            xdask.carried(AsyncCall().__call__),
        ]
    for job in jobs:
        assert iscoroutinefunction(job), job
        assert inspect.iscoroutinefunction(job) is (sys.version_info >= (3, 12))
    assert not iscoroutinefunction(xdask.carried(dt.seen))
    assert jobs[0].__name__ == jobs[1].__name__ == "aseen"
    with dt.request(user_id=2, tenant="other"), dt.local_only(x=2):
        assert sees_async(asyncio.run(jobs[0]("here"))) == ({"user_id": 1}, NOTHING)
        assert sees_async(asyncio.run(jobs[1]())) == ({"user_id": 1}, NOTHING)
        assert sees(asyncio.run(jobs[2]())) == ({"user_id": 1}, NOTHING)
        # Stepped by hand to its first await and left there, it is bound only inside.
        stepped = jobs[0]("stepped")
        assert stepped.send(None) is None
        assert sees(dt.view()) == ({"user_id": 2, "tenant": "other"}, {"x": 2})
        stepped.close()


# Older Dask (2024.8, which Python 3.9 gets) warns when a local scheduler runs while a
# distributed client (this module's) is current: the test chooses it on purpose.
@pytest.mark.filterwarnings("ignore:Running on a single-machine scheduler:UserWarning")
def test_dask_s_local_schedulers_return_the_coroutine() -> None:
    """Without distributed, Dask does not await a coroutine function's task: the
    result is the coroutine, as with plain dask.delayed, and it runs in the bindings."""
    with dt.request(user_id=2):
        later = xdask.delayed(dt.aseen)("local")
    (coroutine,) = dask.compute(later, scheduler="sync")
    assert inspect.iscoroutine(coroutine)
    assert sees_async(asyncio.run(coroutine)) == ({"user_id": 2}, NOTHING)


@pytest.mark.parametrize(
    ("func", "match"),
    [
        (
            AsyncCall(),
            r"^xlocal.dask cannot run <test_dask.AsyncCall object at 0x[0-9a-f]+> "
            r"as a task: its `async def __call__` makes a coroutine that Dask does not "
            r"await \(it awaits coroutine functions only\); submit its bound method "
            r"\(obj\.__call__\) or an async def function$",
        ),
        (
            agen,
            r"^xlocal.dask cannot run <function agen at 0x[0-9a-f]+> as a task: it is "
            r"an async generator function, and a task gives what its function returns:"
            r" its body would run after the task ended, outside the task's bindings; "
            r"submit a function that consumes it$",
        ),
        (
            gen,
            r"^xlocal.dask cannot run <function gen at 0x[0-9a-f]+> as a task: it is "
            r"a generator function, ",
        ),
        (functools.partial(agen, 1), r"^xlocal.dask cannot run functools.partial"),
    ],
)
def test_what_dask_would_not_await_is_refused(
    client: Any, func: Any, match: str
) -> None:
    """An async __call__, a generator or async generator function is refused by
    submit, map, delayed and carried, where plain Dask fails to send its result."""
    with pytest.raises(TypeError, match=match):
        client.submit(func)
    with pytest.raises(TypeError, match=match):
        client.map(func, [1])
    with pytest.raises(TypeError, match=match):
        xdask.delayed(func)
    with pytest.raises(TypeError, match=match):
        xdask.carried(func)


# -- keys: equal bindings, one task ----------------------------------------------------


def test_equal_bindings_give_one_key_whatever_the_order(client: Any) -> None:
    """A pure call under bindings whose dicts were built in another order is the same
    task, computed once; under other bindings it is another."""
    with dt.request(user_id=1, tenant={"a": 1, "b": {"x": [1], "y": 2}}):
        a = client.submit(dt.once, 1, pure=True)
        a_later = xdask.delayed(dt.once, pure=True)(1)
    with dt.request(tenant={"b": {"y": 2, "x": [1]}, "a": 1}, user_id=1):
        b = client.submit(dt.once, 1, pure=True)
        b_later = xdask.delayed(dt.once, pure=True)(1)
    with dt.request(user_id=1, tenant={"a": 1, "b": {"x": [1], "y": 3}}):
        c = client.submit(dt.once, 1, pure=True)
        c_later = xdask.delayed(dt.once, pure=True)(1)
    assert a.key == b.key != c.key
    assert a_later.key == b_later.key != c_later.key
    ra, rb, rc = client.gather([a, b, c])
    assert ra == rb != rc
    assert ra[:2] == (1, {"a": 1, "b": {"x": [1], "y": 2}})
    la, lb, lc = dask.compute(a_later, b_later, c_later)
    assert la == lb != lc
    assert lc[:2] == (1, {"a": 1, "b": {"x": [1], "y": 3}})


# -- signed carriers -------------------------------------------------------------------


def test_signed_carriers_run(signed_client: Any) -> None:
    """On workers that have a key, tasks signed with it run in their bindings:
    submit, map, delayed, coroutines, and tasks submitted by tasks."""
    with dt.request(user_id=7, tenant="acme"), dt.local_only(x=1):
        one = signed_client.submit(dt.seen, "one")
        mapped = signed_client.map(dt.seen, ["m1", "m2"])
        coroutine = signed_client.submit(dt.aseen, "c")
        later = xdask.delayed(dt.seen, signing_key=KEY)("later")
        spawned = signed_client.submit(dt.spawns, "s", pure=False)
    carried = {"user_id": 7, "tenant": "acme"}
    for value in signed_client.gather([one, *mapped]):
        assert sees(value) == (carried, NOTHING)
    assert sees_async(coroutine.result(timeout=TIMEOUT)) == (carried, NOTHING)
    assert sees(signed_client.compute(later).result(timeout=TIMEOUT)) == (
        carried,
        NOTHING,
    )
    outer = spawned.result(timeout=TIMEOUT)
    assert [sees(child) for child in outer["children"]] == [
        (carried, NOTHING),
        ({**carried, "trace": "s-nested"}, NOTHING),
        (carried, NOTHING),
    ]


def _forged(job: Any) -> Any:
    """*job* with user_id 1 changed to 0 in its carrier, the signature kept."""
    text = job.carrier[CARRIER_KEY]
    assert '"user_id":"1"' in text
    return xdask.Carried(
        job.__wrapped__,
        {**job.carrier, CARRIER_KEY: text.replace('"user_id":"1"', '"user_id":"0"')},
    )


def test_the_worker_refuses_carriers_not_signed_with_its_key(
    signed_client: Any,
) -> None:
    """A worker with a key fails a task whose carrier was changed, is unsigned or was
    signed with another key, naming the task, and never runs its function."""
    submit = functools.partial(distributed.Client.submit, signed_client, pure=False)
    with dt.request(user_id=1):
        tampered = submit(_forged(xdask.carried(dt.seen, signing_key=KEY)))
        tampered_async = submit(_forged(xdask.carried(dt.aseen, signing_key=KEY)))
        unsigned = submit(xdask.carried(dt.seen))
        unsigned_async = submit(xdask.carried(dt.aseen))
        wrong = submit(xdask.carried(dt.seen, signing_key=b"another secret"))
    refused = (
        r"cannot extract bindings from the carrier: its signature is missing or does "
        r"not match: it was changed, or signed with another key; nothing was bound\. "
        r"Tasks run here must be signed with this process's XLOCAL_DASK_SIGNING_KEY: "
        r"sign them with the same key where they are submitted \(set the variable "
        r"there too, or pass signing_key=\)$"
    )
    for future in (tampered, unsigned, wrong):
        task = rf"task '{re.escape(future.key)}' \(dask_tasks.seen\)"
        with pytest.raises(
            CarrierError, match=rf"^xlocal.dask refused to run {task}: "
        ):
            future.result(timeout=TIMEOUT)
        with pytest.raises(CarrierError, match=refused):
            future.result(timeout=TIMEOUT)
    for future in (tampered_async, unsigned_async):
        task = r"a task of dask_tasks.aseen"
        with pytest.raises(
            CarrierError, match=rf"^xlocal.dask refused to run {task}: "
        ):
            future.result(timeout=TIMEOUT)
        with pytest.raises(CarrierError, match=refused):
            future.result(timeout=TIMEOUT)
    with dt.request(user_id=1):
        after = signed_client.submit(dt.seen, pure=False)
    assert sees(after.result(timeout=TIMEOUT)) == ({"user_id": 1}, NOTHING)


def test_a_worker_believes_its_older_keys_while_they_are_rotated(
    signed_client: Any,
) -> None:
    """Tasks signed with a key the worker lists in XLOCAL_DASK_OLD_SIGNING_KEYS run;
    signing_key= takes a sequence, whose first signs."""
    submit = functools.partial(distributed.Client.submit, signed_client, pure=False)
    with dt.request(user_id=3):
        futures = [
            submit(xdask.carried(dt.seen, signing_key=OLD_KEYS[0])),
            submit(xdask.carried(dt.aseen, signing_key=OLD_KEYS[1])),
            submit(xdask.carried(dt.seen, signing_key=[OLD_KEYS[1], b"unknown"])),
        ]
        signing_old = xdask.delayed(dt.seen, signing_key=(OLD_KEYS[0], KEY))("d")
        refused = submit(xdask.carried(dt.seen, signing_key=[b"unknown", KEY]))
    assert sees(futures[0].result(timeout=TIMEOUT)) == ({"user_id": 3}, NOTHING)
    assert sees_async(futures[1].result(timeout=TIMEOUT)) == ({"user_id": 3}, NOTHING)
    assert sees(futures[2].result(timeout=TIMEOUT)) == ({"user_id": 3}, NOTHING)
    done = signed_client.compute(signing_old).result(timeout=TIMEOUT)
    assert sees(done) == ({"user_id": 3}, NOTHING)
    with pytest.raises(CarrierError, match=r"signature is missing or does not match"):
        refused.result(timeout=TIMEOUT)


def test_the_old_keys_variable_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Called here, a carried function believes this process's older keys too; the
    list alone, without the key that signs, is refused."""
    monkeypatch.setenv(KEY_VARIABLE, KEY_TEXT)
    monkeypatch.setenv(OLD_KEYS_VARIABLE, "older-secret\toldest-secret ")
    with dt.request(user_id=4):
        by_old = xdask.carried(dt.seen, signing_key=OLD_KEYS[1])
        by_environment = xdask.carried(dt.seen)  # signs with the key, not the old ones
        by_unknown = xdask.carried(dt.seen, signing_key=b"unknown")
        by_key = xdask.carried(dt.seen, signing_key=KEY)
    assert by_environment.carrier == by_key.carrier
    assert sees(by_old()) == ({"user_id": 4}, NOTHING)
    assert sees(by_environment()) == ({"user_id": 4}, NOTHING)
    with pytest.raises(CarrierError, match=r"^xlocal.dask refused to run a task of "):
        by_unknown()
    monkeypatch.setenv(OLD_KEYS_VARIABLE, " ")  # an empty list: the key alone
    with pytest.raises(CarrierError, match=r"^xlocal.dask refused to run a task of "):
        by_old()
    monkeypatch.delenv(KEY_VARIABLE)
    monkeypatch.setenv(OLD_KEYS_VARIABLE, "older-secret")
    alone = (
        r"^XLOCAL_DASK_OLD_SIGNING_KEYS is set in this process, but not "
        r"XLOCAL_DASK_SIGNING_KEY: set that to the key that signs, or unset both$"
    )
    with pytest.raises(ValueError, match=alone):
        xdask.carried(dt.seen)
    with pytest.raises(ValueError, match=alone):
        by_old()
    monkeypatch.setenv(OLD_KEYS_VARIABLE, "")  # set, and empty: no older keys
    with dt.request(user_id=5):
        unsigned = xdask.carried(dt.seen)
    assert SIGNATURE_KEY not in unsigned.carrier
    assert sees(unsigned()) == ({"user_id": 5}, NOTHING)


def test_the_signing_key_never_travels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signed task pickles without its key, and tokenizes apart from an unsigned
    one; the process's key comes from its environment, and is checked where used."""
    from dask.base import tokenize  # noqa: PLC0415

    with dt.request(user_id=1):
        signed = xdask.carried(dt.seen, signing_key=KEY)
        unsigned = xdask.carried(dt.seen)
        monkeypatch.setenv(KEY_VARIABLE, KEY_TEXT)
        from_environment = xdask.carried(dt.seen)
        forged = _forged(signed)
    assert KEY not in pickle.dumps(signed)
    assert SIGNATURE_KEY in signed.carrier
    assert SIGNATURE_KEY not in unsigned.carrier
    assert from_environment.carrier == signed.carrier
    assert tokenize(signed) != tokenize(unsigned)
    # Called here, a carried function checks with this process's key.
    assert sees(signed()) == ({"user_id": 1}, NOTHING)
    with pytest.raises(CarrierError, match=r"^xlocal.dask refused to run a task of "):
        unsigned()
    with pytest.raises(CarrierError, match=r"^xlocal.dask refused to run a task of "):
        forged()
    monkeypatch.setenv(KEY_VARIABLE, "")
    empty = (
        r"^XLOCAL_DASK_SIGNING_KEY is set but empty in this process: set it to the "
        r"secret that the clients and workers share, or unset it$"
    )
    with pytest.raises(ValueError, match=empty):
        xdask.carried(dt.seen)
    with pytest.raises(ValueError, match=empty):
        signed()


@pytest.mark.parametrize(
    ("key", "given"),
    [
        ("text", "str"),
        (b"", "empty bytes"),
        (3, "int"),
        ([], "an empty sequence"),
        ([KEY, b""], "empty bytes"),
        ((KEY, "text"), "str"),
        (bytearray(KEY), "bytearray"),
    ],
)
def test_a_signing_key_must_be_bytes(key: Any, given: str) -> None:
    """Every entry point refuses a signing key that is not non-empty bytes, or a
    non-empty sequence of them, before it does anything."""
    match = (
        r"^signing_key= must be a secret of non-empty bytes \(or a sequence of them, "
        r"the one that signs first\), the same where tasks are submitted and on the "
        rf"workers \(their XLOCAL_DASK_SIGNING_KEY\), not {given}$"
    )
    with pytest.raises(TypeError, match=match):
        xdask.Client(signing_key=key)
    with pytest.raises(TypeError, match=match):
        xdask.carried(dt.seen, signing_key=key)
    with pytest.raises(TypeError, match=match):
        xdask.delayed(dt.seen, signing_key=key)
    with pytest.raises(TypeError, match=match):
        xdask.get_client(signing_key=key)
    with pytest.raises(TypeError, match=match), xdask.worker_client(signing_key=key):
        pass
