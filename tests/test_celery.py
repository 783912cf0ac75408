"""xlocal.celery against real Celery: a redis broker and real worker processes.

The tasks are in tests/celery_tasks.py; the workers (prefork with 2 processes, solo, and
threads with 2 threads, one queue each) are started once for the module.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import json
import logging
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

celery = pytest.importorskip("celery")

pytestmark = pytest.mark.filterwarnings(
    # kombu's connections in an in-process worker thread are sometimes dropped without
    # close() when the worker stops (seen on Python 3.10): Celery's leak, not xlocal's.
    r"ignore:Exception ignored in. <socket\.socket"
    r":pytest.PytestUnraisableExceptionWarning"
)

import celery_tasks as ct  # noqa: E402
from celery import chain, chord, group, xmap  # noqa: E402
from celery.result import AsyncResult  # noqa: E402
from celery.signals import after_task_publish  # noqa: E402
from engines import (  # noqa: E402
    CeleryWorker,
    Redis,
    celery_workers,
    close_app,
    readme_example,
    run_script,
)

import xlocal.celery as xcelery  # noqa: E402
from xlocal.portable import (  # noqa: E402
    CARRIER_KEY,
    SIGNATURE_KEY,
    UnportableError,
    inject,
)

TIMEOUT = 60
POOLS = ["prefork", "solo", "threads"]
NOTHING: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _configured(redis_server: Redis) -> Iterator[None]:
    """The tasks app uses the real redis, before anything reads its settings."""
    ct.app.conf.update(broker_url=redis_server.url, result_backend=redis_server.url)
    yield
    close_app(ct.app)


@pytest.fixture(autouse=True)
def _root_log_level() -> Iterator[None]:
    """The root logger's level as it was: an in-process worker's start sets it to its
    own log level (ERROR), which would hide the warnings that later tests read."""
    level = logging.root.level
    yield
    logging.root.setLevel(level)


@pytest.fixture(scope="module")
def workers(redis_server: Redis) -> Iterator[dict[str, CeleryWorker]]:
    """Real workers of each pool for the tasks app, against the real redis."""
    with celery_workers(ct.app, redis_server.url, POOLS) as started:
        yield started


def get(result: Any) -> Any:
    """The value of a task's result, waiting at most TIMEOUT seconds."""
    return result.get(timeout=TIMEOUT)


def sees(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a task saw on both xlocals; checks that the one before left nothing."""
    assert result["left"] == [[], []], "the task before left bindings behind"
    return result["request"], result["local_only"]


@pytest.mark.parametrize("pool", POOLS)
def test_each_task_sees_exactly_its_own_bindings(
    workers: dict[str, CeleryWorker], pool: str
) -> None:
    """Many tasks with different bindings on few reused workers see only their own."""
    n = 40 if pool == "prefork" else 16
    sent = []
    for i in range(n):
        if i % 4 == 3:
            sent.append((None, ct.seen.apply_async((i,), queue=pool)))
            continue
        with ct.request(user_id=i, tenant=f"t{i}", db=f"conn{i}"), ct.local_only(i=i):
            sent.append((i, ct.seen.apply_async((i,), queue=pool)))
    pids = set()
    for i, result in sent:
        value = get(result)
        pids.add(value["pid"])
        expected = NOTHING if i is None else {"user_id": i, "tenant": f"t{i}"}
        assert sees(value) == (expected, NOTHING), value
    # Few worker processes, each reused for many tasks.
    assert len(pids) <= (1 if pool in ("solo", "threads") else 2) < n


def test_unbound_task_sees_nothing(workers: dict[str, CeleryWorker]) -> None:
    """A task published outside any binding sees no binding in the worker."""
    assert sees(get(ct.seen.delay("unbound"))) == (NOTHING, NOTHING)


@pytest.mark.parametrize("pool", POOLS)
def test_raising_task_leaves_nothing_bound(
    workers: dict[str, CeleryWorker], pool: str
) -> None:
    """A task that raises inside its bindings leaves nothing bound for the next."""
    for i in range(4):
        with ct.request(user_id=i):
            failing = ct.fails.apply_async((i,), queue=pool)
        with pytest.raises(ValueError, match=f"task failed on purpose: {i}"):
            get(failing)
        assert sees(get(ct.seen.apply_async(queue=pool))) == (NOTHING, NOTHING)


def test_retries_keep_the_bindings(workers: dict[str, CeleryWorker]) -> None:
    """A task that retries itself sees its publisher's bindings on the last try."""
    with ct.request(user_id=5, tenant="acme"):
        result = ct.retried.delay("r")
    value = get(result)
    assert value["retries"] == 2
    assert sees(value) == ({"user_id": 5, "tenant": "acme"}, NOTHING)


def test_tasks_published_by_tasks_carry_the_bindings_on(
    workers: dict[str, CeleryWorker],
) -> None:
    """A task's own tasks carry its bindings, and a binding it nests over them."""
    with ct.request(user_id=3, tenant="acme"), ct.local_only(x=1):
        outer = get(ct.spawns.delay("s"))
    assert sees(outer) == ({"user_id": 3, "tenant": "acme"}, NOTHING)
    plain, nested = (get(AsyncResult(i, app=ct.app)) for i in outer["children"])
    assert sees(plain) == ({"user_id": 3, "tenant": "acme"}, NOTHING)
    assert sees(nested) == (
        {"user_id": 3, "tenant": "acme", "trace": "s-nested"},
        NOTHING,
    )


def test_a_signature_carries_the_bindings_it_was_made_under(
    workers: dict[str, CeleryWorker],
) -> None:
    """A signature keeps its bindings, wherever and under whatever it is applied."""
    with ct.request(user_id=1), ct.local_only(x=1):
        made = ct.seen.s("made")
    assert sees(get(made.delay())) == ({"user_id": 1}, NOTHING)
    with ct.request(user_id=2, tenant="other"):
        assert sees(get(made.apply_async())) == ({"user_id": 1}, NOTHING)
        assert sees(made.apply().get()) == ({"user_id": 1}, NOTHING)  # eager
        assert sees(get(ct.seen.delay()))[0] == {"user_id": 2, "tenant": "other"}
    assert sees(get(ct.seen.s().delay())) == (NOTHING, NOTHING)


def test_each_link_of_a_chain_carries_its_own_bindings(
    workers: dict[str, CeleryWorker],
) -> None:
    """Every link of a chain sees the bindings its signature was made under."""
    links = []
    for tag in (1, 2, 3):
        with ct.request(user_id=tag):
            links.append(ct.step.s(tag=tag))
    with ct.request(user_id=9, tenant="applier"):
        last = get(chain(*links).apply_async())
    seen = []
    while last is not None:
        seen.append((last["tag"], sees(last)))
        last = last["previous"]
    assert seen == [(tag, ({"user_id": tag}, NOTHING)) for tag in (3, 2, 1)]


def test_groups_and_chords_carry_each_signature_s_bindings(
    workers: dict[str, CeleryWorker],
) -> None:
    """Group members, a chord's header tasks and its body keep their own bindings."""
    members = []
    for i in range(4):
        with ct.request(user_id=i):
            members.append(ct.seen.s(i))
    with ct.request(tenant="body"):
        body = ct.collect.s(tag="body")
    with ct.request(user_id=9):
        done = get(group(members).apply_async())
        result = get(chord(members[:3])(body))
    assert [sees(m) for m in done] == [({"user_id": i}, NOTHING) for i in range(4)]
    assert sees(result) == ({"tenant": "body"}, NOTHING)
    assert [sees(r) for r in result["results"]] == [
        ({"user_id": i}, NOTHING) for i in range(3)
    ]


def test_explicit_carrier_headers_win(workers: dict[str, CeleryWorker]) -> None:
    """A carrier given in headers= is sent as it is, over the bindings in force and
    over a signature's own: when a task or a signature is applied, a signature made or
    set; given when a signature is made, or as its OPTION, it is the signature's own."""
    with ct.request(user_id=1):
        carrier = inject()
    with ct.request(user_id=2):
        assert sees(get(ct.seen.apply_async(headers=carrier)))[0] == {"user_id": 1}
        made = ct.seen.s().set(headers=carrier)
        given = ct.seen.signature(("given",), headers=carrier)
        option = ct.seen.signature(("option",), **{xcelery.OPTION: carrier})
        own = ct.seen.s("own")
    with ct.request(user_id=3):
        sent = [made.delay(), given.delay(), option.delay()]
        # A carrier given when the signature was made is its own.
        sent.append(given.apply_async(headers=TRACE))
        sent.append(own.apply_async(headers=carrier))
        eager = [made.apply(), option.apply(), own.apply(headers=carrier)]
    with ct.request(user_id=object()):  # what is in force is not even encoded
        sent.append(ct.seen.apply_async(headers=carrier))
    seen = [sees(get(r))[0] for r in sent] + [sees(e.get())[0] for e in eager]
    assert seen == [{"user_id": 1}] * 9


def test_a_signature_option_that_is_no_carrier_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A signature whose OPTION is no carrier runs with no xlocal bindings: its value
    is sent as the carrier's, and refused as a malformed one, never replaced."""
    with ct.request(user_id=1):
        made = ct.seen.s("bad").set(**{xcelery.OPTION: 42})
        with caplog.at_level(logging.ERROR, "xlocal.celery"):
            seen = made.apply().get()
    assert sees(seen) == (NOTHING, NOTHING)
    assert "its 'xlocal' value is of type int, not str" in caplog.text


TRACE = {ct.TRACE_HEADER: "t-1"}


def as_json(value: Any) -> Any:
    """*value* after a round trip through JSON, as a message carries it."""
    return json.loads(json.dumps(value))


def test_a_signature_applied_with_headers_keeps_its_bindings(
    workers: dict[str, CeleryWorker],
) -> None:
    """headers= given when a signature is applied, set, cloned or sent again from its
    JSON form replaces Celery's whole headers option; the signature still runs with
    the bindings it was made under, and the applier's header arrives too."""
    with ct.request(user_id=1), ct.local_only(x=1):
        made = ct.seen.s("made")
    options = as_json(made.options)
    with ct.request(user_id=2, tenant="other"):
        results = [
            made.apply_async(headers=TRACE),
            made.clone().set(headers=TRACE).delay(),
            made.clone(headers=TRACE).delay(),
            made.replace(args=("replaced",)).apply_async(headers=TRACE),
            celery.signature(as_json(made), app=ct.app).apply_async(headers=TRACE),
            ct.app.signature(as_json(made)).set(headers=TRACE).apply_async(),
        ]
        eager = [made.apply(headers=TRACE), made.clone(headers=TRACE).apply()]
        ct.app.conf.task_always_eager = True
        try:
            eager.append(made.apply_async(headers=TRACE))
        finally:
            ct.app.conf.task_always_eager = False
    for value in [get(r) for r in results] + [e.get() for e in eager]:
        assert (sees(value), value["trace_id"]) == (({"user_id": 1}, NOTHING), "t-1")
    assert made.options == options  # applying it left it as it was made


def test_chains_applied_with_headers_keep_each_link_s_bindings(
    workers: dict[str, CeleryWorker],
) -> None:
    """A chain (chain() or |) applied with headers= runs each link with its own
    bindings; the next links, sent by the workers from their JSON form, too."""
    links = []
    for tag in (1, 2, 3):
        with ct.request(user_id=tag):
            links.append(ct.step.s(tag=tag))
    with ct.request(user_id=9, tenant="applier"):
        results = [
            chain(*links).apply_async(headers=TRACE),
            (links[0] | links[1] | links[2]).apply_async(headers=TRACE),
        ]
        eager = (links[0] | links[1] | links[2]).apply(headers=TRACE).get()
    for value in [get(r) for r in results] + [eager]:
        seen, link = [], value
        while link is not None:
            seen.append((link["tag"], sees(link)))
            first = link
            link = link["previous"]
        assert seen == [(tag, ({"user_id": tag}, NOTHING)) for tag in (3, 2, 1)]
        assert first["trace_id"] == "t-1"  # the others get it in eager mode only


def test_groups_and_chords_applied_with_headers_keep_each_member_s_bindings(
    workers: dict[str, CeleryWorker],
) -> None:
    """headers= given to a group or chord reaches every member, which still runs with
    the bindings it was made under; so does the chord's body."""
    members = []
    for i in range(3):
        with ct.request(user_id=i):
            members.append(ct.seen.s(i))
    with ct.request(tenant="body"):
        body = ct.collect.s(tag="body")
    with ct.request(user_id=9):
        done = get(group(members).apply_async(headers=TRACE))
        eager = group(members).apply(headers=TRACE).get()
        result = get(chord(members)(body, headers=TRACE))
    expected = [(({"user_id": i}, NOTHING), "t-1") for i in range(3)]
    assert [(sees(m), m["trace_id"]) for m in done] == expected
    assert [(sees(m), m["trace_id"]) for m in eager] == expected
    assert [(sees(m), m["trace_id"]) for m in result["results"]] == expected
    assert sees(result) == ({"tenant": "body"}, NOTHING)


def test_a_task_replaced_by_a_signature_runs_it_with_the_signature_s_bindings(
    workers: dict[str, CeleryWorker],
) -> None:
    """A task that replaces itself (Task.replace) with a signature it was given runs
    it with the bindings the signature was made under, not its own."""
    with ct.request(user_id=1):
        made = ct.seen.s("replacement")
    with ct.request(user_id=2):
        result = ct.replaced_by.delay(made)
        eager = ct.replaced_by.apply((as_json(made),)).get()
    assert [sees(get(result)), sees(eager)] == [({"user_id": 1}, NOTHING)] * 2


def test_subtask_fixes_the_bindings_as_signature_does(
    workers: dict[str, CeleryWorker],
) -> None:
    """task.subtask(), Celery's alias of task.signature(), fixes the bindings too."""
    with ct.request(user_id=1), ct.local_only(x=1):
        made = ct.seen.subtask(("sub",))
    with ct.request(user_id=2, tenant="other"):
        sent = get(made.apply_async(headers=TRACE))
        eager = made.apply().get()
    assert [sees(sent), sees(eager)] == [({"user_id": 1}, NOTHING)] * 2


def test_items_of_map_starmap_and_chunks_run_with_the_bindings_of_their_making(
    workers: dict[str, CeleryWorker],
) -> None:
    """Each item of task.map(), task.starmap() and task.chunks() runs with the bindings
    in force where it was called, not those of whoever applies it; in eager mode too.
    The items of a map over a signature by name run with the applier's."""
    with ct.request(user_id=1), ct.local_only(x=1):
        mapped = ct.seen.map(["m1", "m2"])
        starmapped = ct.step.starmap([(None, "s1"), (None, "s2")])
        chunked = ct.seen.chunks([("c1",), ("c2",), ("c3",)], 2)
        made = ct.seen.s()
        by_name = xmap(celery.signature("celery_tasks.seen", app=ct.app), ["n"])
    with ct.request(user_id=2, tenant="other"):
        # Only Celery's map tasks take the carrier of a signature they are given.
        given = [ct.seen.delay(made), ct.seen.apply((made,))]
        sent = [mapped.apply_async(headers=TRACE), starmapped.delay()]
        parts = chunked.apply_async(headers=TRACE)
        eager = mapped.apply().get() + starmapped.apply().get()
        # Celery's map task called with positional arguments.
        eager += ct.app.tasks["celery.map"].apply((made, ["p"])).get()
        named = get(by_name.apply_async()) + by_name.apply().get()
    items = [*get(sent[0]), *get(sent[1]), *(i for part in get(parts) for i in part)]
    assert [i["tag"] for i in items] == ["m1", "m2", "s1", "s2", "c1", "c2", "c3"]
    assert [sees(i) for i in items + eager] == [({"user_id": 1}, NOTHING)] * 12
    applier = ({"user_id": 2, "tenant": "other"}, NOTHING)
    assert [sees(i) for i in named] == [applier] * 2
    assert [sees(r.get(timeout=TIMEOUT)) for r in given] == [applier] * 2


def test_signatures_by_name(workers: dict[str, CeleryWorker]) -> None:
    """app.signature(name) fixes the bindings where it is made, as task.s() does;
    celery.signature(name), which no app makes, carries those of whoever applies it,
    as send_task does: a chain's next link, those of the task that sends it on."""
    with ct.request(user_id=1):
        by_app = ct.app.signature("celery_tasks.seen", ("by-app",))
        by_keyword = ct.app.signature(varies="celery_tasks.seen")
        by_name = celery.signature("celery_tasks.seen", ("by-name",), app=ct.app)
        # A dict is a signature already: it keeps what it carries, here nothing.
        from_dict = ct.app.signature(as_json(by_name))
        then = celery.signature("celery_tasks.step", kwargs={"tag": 2}, app=ct.app)
    with ct.request(user_id=3):
        linked = ct.step.s(tag=1) | then
    with ct.request(user_id=2):
        assert sees(get(by_app.apply_async(headers=TRACE)))[0] == {"user_id": 1}
        assert sees(by_app.apply().get())[0] == {"user_id": 1}
        assert sees(get(by_keyword.delay()))[0] == {"user_id": 1}
        assert sees(get(by_name.delay()))[0] == {"user_id": 2}
        assert sees(from_dict.apply().get())[0] == {"user_id": 2}
        last = get(linked.apply_async())
    assert [sees(last)[0], sees(last["previous"])[0]] == [{"user_id": 3}] * 2
    assert sees(get(by_name.delay())) == (NOTHING, NOTHING)


@pytest.fixture
def raw_app(redis_server: Redis, workers: dict[str, CeleryWorker]) -> Any:
    """Another app on the same broker, without install(): it sends headers as given."""
    app = celery.Celery("raw", broker=redis_server.url, backend=redis_server.url)
    app.conf.update(task_serializer="json", accept_content=["json"])
    yield app
    close_app(app)


@pytest.mark.parametrize(
    "header",
    [
        "not json",
        '{"b": {}, "v": 99}',
        '{"b": {"tests.celery.request": {"user_id": 1}}, "v": 1}',
        "x" * 20_000,
        42,
        ["a", "list"],
        {"b": "nested"},
    ],
    ids=["text", "version", "not-encoded", "oversized", "int", "list", "dict"],
)
def test_a_malformed_carrier_is_logged_and_the_task_runs_unbound(
    raw_app: Any, workers: dict[str, CeleryWorker], header: Any
) -> None:
    """A bad carrier header logs an error in the worker; the task runs with nothing."""
    result = raw_app.send_task(
        "celery_tasks.seen", ("bad",), headers={CARRIER_KEY: header}, queue="solo"
    )
    assert sees(get(result)) == (NOTHING, NOTHING)
    log = workers["solo"].output()
    assert f"xlocal.celery: task celery_tasks.seen[{result.id}] runs with no" in log
    assert "cannot extract bindings from the carrier" in log
    # The worker is still there and carries the next good carrier.
    with ct.request(user_id=1):
        assert sees(get(ct.seen.apply_async(queue="solo")))[0] == {"user_id": 1}


def test_a_message_without_carrier_runs_unbound(
    raw_app: Any, workers: dict[str, CeleryWorker]
) -> None:
    """A message from a publisher that did not install xlocal runs with nothing."""
    result = raw_app.send_task("celery_tasks.seen", ("plain",), queue="prefork")
    assert sees(get(result)) == (NOTHING, NOTHING)


def test_an_unencodable_value_fails_in_the_publisher(
    workers: dict[str, CeleryWorker],
) -> None:
    """delay() and making a signature raise for a value that cannot be encoded."""
    match = r"^cannot carry 'user_id' of <xlocal 'tests.celery"
    with ct.request(user_id=object()):
        with pytest.raises(UnportableError, match=match):
            ct.seen.delay("never")
        with pytest.raises(UnportableError, match=match):
            ct.seen.s("never")


@contextlib.contextmanager
def published_headers() -> Iterator[list[dict[str, Any]]]:
    """The headers of every message published in the block, as Celery sent them."""
    headers: list[dict[str, Any]] = []

    def record(headers: dict[str, Any] | None = None, **_: Any) -> None:
        headers_seen.append(dict(headers or {}))

    headers_seen = headers
    after_task_publish.connect(record, weak=False)
    try:
        yield headers
    finally:
        after_task_publish.disconnect(record)


def nothing() -> None:
    """A task body that does nothing."""


def test_install_is_idempotent_per_app_and_uninstall_undoes_it(
    redis_server: Redis,
) -> None:
    """Installing twice gives one handle; uninstalled apps send no carrier."""
    one = celery.Celery("one", broker=redis_server.url)
    two = celery.Celery("two", broker=redis_server.url)
    task_one = one.task(name="one.t")(nothing)
    task_two = two.task(name="two.t")(nothing)
    try:
        handle = xcelery.install(one)
        assert xcelery.install(one) is handle
        assert handle.installed
        assert handle.app is one
        assert repr(handle) == f"<xlocal.celery.Installed on {one!r}: installed>"
        with published_headers() as sent, ct.request(user_id=1):
            task_one.apply_async(queue="nobody")
            task_two.apply_async(queue="nobody")
        assert xcelery.HEADER == CARRIER_KEY  # the carrier is the message headers
        assert xcelery.HEADER in sent[0]
        assert xcelery.HEADER not in sent[1]
        other = xcelery.install(two)
        handle.uninstall()
        handle.uninstall()
        xcelery.uninstall(one)
        assert not handle.installed
        assert repr(handle) == f"<xlocal.celery.Installed on {one!r}: uninstalled>"
        assert not {"signature", "subtask", "apply"} & set(vars(one.Task))
        assert "signature" not in vars(one)
        assert xcelery.OPTION not in task_one.s().options
        assert xcelery.OPTION not in one.signature("one.t").options
        assert CARRIER_KEY in task_two.s().options[xcelery.OPTION]
        assert other.installed
        assert ct.installed.installed
        with published_headers() as sent, ct.request(user_id=1):
            task_one.apply_async(queue="nobody")
            task_two.apply_async(queue="nobody")
        assert CARRIER_KEY not in sent[0]
        assert CARRIER_KEY in sent[1]
        assert xcelery.install(one) is not handle
    finally:
        xcelery.uninstall(one)
        xcelery.uninstall(two)
        close_app(one)
        close_app(two)


def test_install_keeps_celery_s_introspection(redis_server: Redis) -> None:
    """The wrapped sender and app.signature unwrap to Celery's own; the wrapped
    methods keep their docs."""
    app = celery.Celery("introspected", broker=redis_server.url)
    sender = app.amqp.send_task_message
    signature = app.signature
    try:
        xcelery.install(app)
        assert app.amqp.send_task_message is not sender
        assert inspect.unwrap(app.amqp.send_task_message) is sender
        assert app.signature != signature
        assert inspect.unwrap(app.signature) == signature
        assert app.signature.__doc__ == celery.Celery.signature.__doc__
        assert app.Task.signature is not celery.Task.signature
        assert app.Task.signature.__doc__ == celery.Task.signature.__doc__
        assert "signature" in app.Task.signature.__doc__
        assert app.Task.subtask is app.Task.signature
        assert app.Task.apply is not celery.Task.apply
        assert app.Task.apply.__doc__ == celery.Task.apply.__doc__
    finally:
        xcelery.uninstall(app)
        close_app(app)


def test_install_refuses_what_is_not_an_app() -> None:
    """install() takes a Celery app and says so."""
    with pytest.raises(TypeError, match=r"^xlocal.celery.install\(\) needs a celery"):
        xcelery.install("app")


# -- eager mode: no worker, the task runs in the caller's own thread ----------------


def test_eager_apply_sees_the_portable_view(caplog: pytest.LogCaptureFixture) -> None:
    """task.apply() sees the caller's portable bindings, decoded, and nothing else."""
    value = [1, {"a": None}]
    with (
        caplog.at_level(logging.WARNING),
        ct.request(user_id=value, tenant="acme", db="conn"),
        ct.local_only(x=1),
    ):
        seen = ct.seen.apply(("eager",)).get()
        assert ct.request.db == "conn"
        assert ct.local_only.x == 1
    assert sees(seen) == ({"user_id": value, "tenant": "acme"}, NOTHING)
    assert seen["request"]["user_id"] is not value  # decoded, as a worker gets it
    assert sees(ct.seen.apply().get()) == (NOTHING, NOTHING)
    assert caplog.records == []


def test_always_eager_delay_sees_the_portable_view() -> None:
    """With task_always_eager, delay() runs in place and sees the portable view."""
    ct.app.conf.task_always_eager = True
    try:
        with ct.request(user_id=2, db="conn"), ct.local_only(x=1):
            seen = ct.seen.delay("eager").get()
    finally:
        ct.app.conf.task_always_eager = False
    assert sees(seen) == ({"user_id": 2}, NOTHING)


def test_eager_apply_keeps_its_positional_arguments() -> None:
    """task.apply() takes its arguments in their places as Celery's does, headers= too;
    a signature's carrier joins headers given in their place."""
    with ct.request(user_id=1):
        carrier = inject()
    with ct.request(user_id=2):
        result = ct.seen.apply(("pos",), None, None, None, "an-id")
        placed = (None, None, None, None, None, None, None, None, TRACE)
        fixed = ct.seen.apply(("fixed",), *placed, **{xcelery.OPTION: carrier})
    assert (result.id, sees(result.get())[0]) == ("an-id", {"user_id": 2})
    assert (sees(fixed.get())[0], fixed.get()["trace_id"]) == ({"user_id": 1}, "t-1")


def test_eager_failures_leave_the_caller_intact() -> None:
    """An eager task that raises restores the caller's own bindings."""
    with ct.request(user_id=1, db="conn"):
        result = ct.fails.apply(("eager",))
        assert ct.request.user_id == 1
        assert ct.request.db == "conn"
        assert not hasattr(ct.request, "trace")
    assert isinstance(result.result, ValueError)


def test_eager_with_an_unencodable_value_logs_and_runs_unbound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In eager mode an unencodable value is logged; the task runs with nothing."""
    with caplog.at_level(logging.ERROR, "xlocal.celery"), ct.request(user_id={1}):
        seen = ct.seen.apply(("eager",)).get()
    assert sees(seen) == (NOTHING, NOTHING)
    assert "cannot carry 'user_id'" in caplog.text


def test_eager_task_inside_a_worker_task(workers: dict[str, CeleryWorker]) -> None:
    """An eager call inside a worker task sees that task's portable view."""
    with ct.request(user_id=6):
        value = get(ct.eager_inside.delay("in"))
    assert sees(value) == ({"user_id": 6}, NOTHING)
    assert sees(value["inner"]) == ({"user_id": 6, "trace": "eager"}, NOTHING)


def test_uninstalled_app_runs_eager_tasks_untouched(
    redis_server: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """An app without install() leaves its eager tasks in the caller's bindings."""
    app = celery.Celery("plain", broker=redis_server.url)
    look = app.task(name="plain.look")(ct.view)
    try:
        with (
            caplog.at_level(logging.WARNING),
            ct.request(user_id=1, db="conn"),
            ct.local_only(x=1),
        ):
            seen = look.apply().get()
            assert (dir(ct.request), dir(ct.local_only)) == (["db", "user_id"], ["x"])
    finally:
        close_app(app)
    assert sees(seen) == ({"user_id": 1, "db": "conn"}, {"x": 1})
    assert caplog.records == []  # neither signal receiver complained


def test_an_outer_eager_task_gets_its_bindings_back_from_an_inner_one() -> None:
    """After an eager task inside an eager task returns, the outer sees its own."""
    with ct.request(user_id=1, db="conn"), ct.local_only(x=1):
        outer = ct.eager_then_seen.apply(("nested",)).get()
        assert (dir(ct.request), dir(ct.local_only)) == (["db", "user_id"], ["x"])
    assert sees(outer) == ({"user_id": 1}, NOTHING)
    assert sees(outer["inner"]) == ({"user_id": 1}, NOTHING)
    assert (dir(ct.request), dir(ct.local_only)) == ([], [])
    # Nothing is kept for ended tasks (a reused worker would keep more every task).
    assert xcelery._running.get() == ()


#: What local_state sees where no Local or LocalStack data is visible.
NO_LOCAL_DATA = {"store": {}, "top": None, "proxied": [False, False]}


def local_data(seen: dict[str, Any]) -> dict[str, Any]:
    """The Local and LocalStack data that local_state saw."""
    return {key: seen[key] for key in NO_LOCAL_DATA}


def eager_local_state(tag: str) -> list[dict[str, Any]]:
    """What local_state sees run by apply(), then by delay() with task_always_eager."""
    applied = ct.local_state.apply((tag,)).get()
    ct.app.conf.task_always_eager = True
    try:
        delayed = ct.local_state.delay(tag).get()
    finally:
        ct.app.conf.task_always_eager = False
    return [applied, delayed]


def test_eager_tasks_see_none_of_the_caller_s_local_data() -> None:
    """An eager task sees no Local or LocalStack data of its caller, nor proxies to
    them, as in a worker; the caller's data is back after it, and what the task
    writes stays in the task, also where the caller had written nothing."""

    def written() -> tuple[Any, ...]:
        ct.store.user = "caller"
        ct.stack.push("caller")
        seen = eager_local_state("eager")
        return seen, dict(ct.store), ct.stack.pop(), ct.stack.top

    def unwritten() -> tuple[Any, ...]:
        return eager_local_state("eager"), dict(ct.store), ct.stack.top

    seen, store, popped, under = contextvars.Context().run(written)
    assert [local_data(s) for s in seen] == [NO_LOCAL_DATA] * 2
    assert (store, popped, under) == ({"user": "caller"}, "caller", None)
    seen, store, top = contextvars.Context().run(unwritten)
    assert [local_data(s) for s in seen] == [NO_LOCAL_DATA] * 2
    assert (store, top) == ({}, None)


def test_a_worker_task_sees_no_local_data_of_the_task_before(
    workers: dict[str, CeleryWorker],
) -> None:
    """What a task writes on a Local or LocalStack is gone for the next task that the
    same worker process runs."""
    first = get(ct.local_state.apply_async(("first",), queue="solo"))
    second = get(ct.local_state.apply_async(("second",), queue="solo"))
    assert first["pid"] == second["pid"]
    assert [local_data(first), local_data(second)] == [NO_LOCAL_DATA] * 2


class Interrupted(BaseException):
    """An interruption, as KeyboardInterrupt (which pytest would take for its own)."""


def interrupt_seen(task: Any, **_: Any) -> None:
    """A task_postrun receiver interrupted while ``seen`` ends."""
    if task.name == ct.seen.name:
        raise Interrupted


def test_an_interrupted_inner_eager_task_is_cleaned_up_by_its_outer_one() -> None:
    """When an inner task's postrun never reaches xlocal.celery, the outer's cleans up.

    Another task_postrun receiver, connected before xlocal.celery's, is interrupted
    when the inner eager task ends; the interruption goes up through the outer task,
    whose own end exits the inner task's bindings too: the caller gets its own back.
    """
    from celery.signals import task_postrun  # noqa: PLC0415

    ct.installed.uninstall()
    assert not any(r[1] is xcelery._postrun for r in task_postrun.receivers)
    task_postrun.connect(interrupt_seen, weak=False)
    try:
        ct.installed = xcelery.install(ct.app)  # its receivers after interrupt_seen
        with ct.request(user_id=1, db="conn"), ct.local_only(x=1):
            with pytest.raises(Interrupted):
                ct.eager_then_seen.apply(("interrupted",))
            assert (dir(ct.request), dir(ct.local_only)) == (["db", "user_id"], ["x"])
            assert ct.request.db == "conn"
        assert (dir(ct.request), dir(ct.local_only)) == ([], [])
        assert xcelery._running.get() == ()
    finally:
        task_postrun.disconnect(interrupt_seen)
        ct.installed = xcelery.install(ct.app)
        # The record of leftovers must run after xlocal.celery's receiver again.
        task_postrun.disconnect(ct._record_leftovers)
        task_postrun.connect(ct._record_leftovers, weak=False)


def test_the_readme_example_runs(redis_server: Redis, tmp_path: Any) -> None:
    """The README's Celery example prints what it says, with a real worker."""
    files, expected = readme_example("Celery")
    assert sorted(files) == ["tasks.py", "web.py"]
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    worker = CeleryWorker(
        redis_server.url, "prefork", app="tasks", cwd=tmp_path, queue="celery"
    )
    pinger = celery.Celery("pinger", broker=redis_server.url)
    try:
        worker.start()
        worker.wait_ready(pinger)
        printed = run_script("web.py", tmp_path, {"BROKER_URL": redis_server.url})
    finally:
        worker.stop()
        close_app(pinger)
    assert printed == expected
    assert expected == ["hello: tenant=acme, user_id=7", "hi: nothing bound"]


def test_uninstalling_every_app_disconnects_the_signals() -> None:
    """With no app installed, xlocal.celery listens to no signal; install reconnects.

    While an app is installed, it holds each of its two receivers, connected once.
    """
    from celery.signals import task_postrun, task_prerun  # noqa: PLC0415

    ours = (xcelery._prerun, xcelery._postrun)

    def receivers() -> list[tuple[str, Any]]:
        # A receiver held weakly is a weakref to it, which shows as itself here.
        return [
            (signal.name, r[1])
            for signal in (task_prerun, task_postrun)
            for r in signal.receivers
            if (r[1]() if isinstance(r[1], weakref.ref) else r[1]) in ours
        ]

    def connected() -> bool:
        return receivers() == [
            ("task_prerun", xcelery._prerun),
            ("task_postrun", xcelery._postrun),
        ]

    assert connected()
    ct.installed.uninstall()
    try:
        assert receivers() == []
        with ct.request(user_id=1, db="conn"):
            assert sees(ct.seen.apply().get())[0] == {"user_id": 1, "db": "conn"}
    finally:
        ct.installed = xcelery.install(ct.app)
        # The record of leftovers must run after xlocal.celery's receiver again.
        task_postrun.disconnect(ct._record_leftovers)
        task_postrun.connect(ct._record_leftovers, weak=False)
    assert connected()
    with ct.request(user_id=1, db="conn"):
        assert sees(ct.seen.apply().get())[0] == {"user_id": 1}


def test_a_worker_thread_in_this_process(
    raw_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A real worker run in a thread of this process binds exactly the carried view."""
    from celery.contrib.testing.worker import start_worker  # noqa: PLC0415

    with start_worker(
        ct.app,
        pool="solo",
        perform_ping_check=False,
        queues=["in-process"],
        shutdown_timeout=TIMEOUT,
    ):
        with ct.request(user_id=1, db="conn"), ct.local_only(x=1):
            bound = ct.seen.apply_async(("bound",), queue="in-process")
        bad = raw_app.send_task(
            "celery_tasks.seen",
            ("bad",),
            headers={CARRIER_KEY: "{"},
            queue="in-process",
        )
        plain = ct.seen.apply_async(("plain",), queue="in-process")
        assert sees(get(bound)) == ({"user_id": 1}, NOTHING)
        assert sees(get(bad)) == (NOTHING, NOTHING)
        assert sees(get(plain)) == (NOTHING, NOTHING)
    assert f"task celery_tasks.seen[{bad.id}] runs with no xlocal bindings" in (
        caplog.text
    )


def test_a_worker_s_own_bindings_are_hidden_from_its_tasks(raw_app: Any) -> None:
    """A worker run where bindings are in force gives its tasks only what they carry.

    A message without a carrier runs with nothing bound, not with the worker's own
    bindings; after each task the worker's own bindings are back.
    """
    from celery.contrib.testing.worker import (  # noqa: PLC0415
        TestWorkController,
        start_worker,
    )

    class BoundWorker(TestWorkController):  # type: ignore[misc]
        """A solo worker whose thread has bindings of its own."""

        def start(self) -> None:
            with ct.request(user_id=0, tenant="worker", db="w"), ct.local_only(w=1):
                super().start()

    own = [["db", "tenant", "user_id"], ["w"]]
    try:
        with start_worker(
            ct.app,
            pool="solo",
            perform_ping_check=False,
            queues=["bound-worker"],
            shutdown_timeout=TIMEOUT,
            WorkController=BoundWorker,
        ):
            with ct.request(user_id=1):
                bound = get(ct.seen.apply_async(("bound",), queue="bound-worker"))
            plain = get(raw_app.send_task("celery_tasks.seen", queue="bound-worker"))
            last = get(ct.seen.apply_async(("last",), queue="bound-worker"))
    finally:
        # The worker's own bindings are no task's leftovers: a later thread of this
        # process may get the same identity.
        ct.after_last_task.clear()
    assert (bound["request"], bound["local_only"]) == ({"user_id": 1}, NOTHING)
    assert (plain["request"], plain["local_only"]) == (NOTHING, NOTHING)
    assert (last["request"], last["local_only"]) == (NOTHING, NOTHING)
    assert plain["left"] == last["left"] == own


def test_signed_carriers_on_a_real_worker(
    raw_app: Any, redis_server: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """With install(key=...), carriers are signed; unsigned or changed ones refused."""
    from celery.contrib.testing.worker import start_worker  # noqa: PLC0415

    signed = celery.Celery("signed", broker=redis_server.url, backend=redis_server.url)
    # No expiry: redis-py 8 deprecates the SETEX that expiring results use; and the
    # worker leaves logging to pytest.
    signed.conf.update(result_expires=None, worker_hijack_root_logger=False)
    look = signed.task(name="signed.look")(ct.view)
    xcelery.install(signed, key=b"a shared secret")
    try:
        with start_worker(
            signed,
            pool="solo",
            perform_ping_check=False,
            queues=["signed"],
            shutdown_timeout=TIMEOUT,
        ):
            with published_headers() as sent, ct.request(user_id=1):
                good = look.apply_async(queue="signed")
                carrier = inject()
            assert SIGNATURE_KEY in sent[0]
            tampered = {**carrier, SIGNATURE_KEY: sent[0][SIGNATURE_KEY][::-1]}
            bad = [
                raw_app.send_task("signed.look", headers=h, queue="signed")
                for h in (carrier, tampered)
            ]
            assert sees(get(good)) == ({"user_id": 1}, NOTHING)
            assert [sees(get(b)) for b in bad] == [(NOTHING, NOTHING)] * 2
        for b in bad:
            assert f"task signed.look[{b.id}] runs with no xlocal bindings" in (
                caplog.text
            )
    finally:
        xcelery.uninstall(signed)
        close_app(signed)


def test_install_options_are_checked(redis_server: Redis) -> None:
    """A bad key or unknown=, or installing again with other options, is refused."""
    app = celery.Celery("options", broker=redis_server.url)
    try:
        with pytest.raises(TypeError, match=r"^key= must be a secret of non-empty"):
            xcelery.install(app, key="text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^unknown= must be 'ignore' or 'error'"):
            xcelery.install(app, unknown="maybe")  # type: ignore[arg-type]
        handle = xcelery.install(app, unknown="error")
        assert xcelery.install(app, unknown="error") is handle
        with pytest.raises(ValueError, match=r"^xlocal.celery.install\(\): <Celery"):
            xcelery.install(app)
    finally:
        xcelery.uninstall(app)
        close_app(app)


def test_unknown_error_refuses_a_carrier_naming_an_unknown_xlocal(
    redis_server: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """With install(unknown="error"), a carrier binding on an xlocal this process does
    not know is refused: logged, and the task runs unbound; by default that part is
    ignored and the rest bound."""
    app = celery.Celery("strict", broker=redis_server.url)
    look = app.task(name="strict.look")(ct.view)
    xcelery.install(app, unknown="error")
    with ct.request(user_id=1):
        carrier = inject()
    payload = json.loads(carrier[CARRIER_KEY])
    payload["b"]["tests.celery.nowhere"] = payload["b"]["tests.celery.request"]
    carrier[CARRIER_KEY] = json.dumps(payload)
    try:
        with caplog.at_level(logging.ERROR, "xlocal.celery"):
            lenient = ct.seen.apply(headers=carrier).get()
            assert caplog.records == []
            strict = look.apply(headers=carrier)
        assert sees(lenient) == ({"user_id": 1}, NOTHING)
        assert sees(strict.get()) == (NOTHING, NOTHING)
        assert f"task strict.look[{strict.id}] runs with no xlocal bindings" in (
            caplog.text
        )
        assert "'tests.celery.nowhere', which is not a portable xlocal" in caplog.text
    finally:
        xcelery.uninstall(app)
        close_app(app)


def test_eager_tasks_check_signatures_too(redis_server: Redis) -> None:
    """In eager mode a keyed app signs and checks what the task is given."""
    app = celery.Celery("eager-signed", broker=redis_server.url)
    look = app.task(name="eager.look")(ct.view)
    xcelery.install(app, key=b"k")
    try:
        with ct.request(user_id=1), ct.local_only(x=1):
            assert sees(look.apply().get()) == ({"user_id": 1}, NOTHING)
            unsigned = inject()
            assert sees(look.apply(headers=unsigned).get()) == (NOTHING, NOTHING)
            made = look.s()
        assert SIGNATURE_KEY in made.options[xcelery.OPTION]
        assert sees(made.apply().get()) == ({"user_id": 1}, NOTHING)
    finally:
        xcelery.uninstall(app)
        close_app(app)


def test_rotated_keys(redis_server: Redis) -> None:
    """With several keys the first signs and a carrier signed with any is believed;
    installing again with the same keys, in a list or a tuple, is the same install."""
    app = celery.Celery("rotated", broker=redis_server.url)
    look = app.task(name="rotated.look")(ct.view)
    handle = xcelery.install(app, key=[b"new", b"old"])
    try:
        assert xcelery.install(app, key=(b"new", b"old")) is handle
        with pytest.raises(ValueError, match=r"installed already, with other key="):
            xcelery.install(app, key=b"new")
        with ct.request(user_id=1):
            made = look.s().options[xcelery.OPTION]
            by_new, by_old, by_other = (inject(key=k) for k in (b"new", b"old", b"?"))
        assert made == by_new  # signed with the first key
        assert sees(look.apply(headers=by_old).get()) == ({"user_id": 1}, NOTHING)
        assert sees(look.apply(headers=by_other).get()) == (NOTHING, NOTHING)
        with pytest.raises(TypeError, match=r"^every secret in key= must be non-emp"):
            xcelery.install(app, key=[b""])
    finally:
        xcelery.uninstall(app)
        close_app(app)
