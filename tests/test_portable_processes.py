"""Portable bindings across real processes: process pools, multiprocessing."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import _portable_app as app
import pytest

from xlocal import ContextExecutor, xlocal
from xlocal.portable import CarrierError, UnportableError, carry

# Python 3.12+ warns when a multi-threaded process forks, and eventlet (imported by
# other test modules) warns at every fork; the fork start method is what is tested here.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:This process .* is multi-threaded:DeprecationWarning"
    ),
    pytest.mark.filterwarnings(
        r"ignore:Using fork\(\) is a bad idea:DeprecationWarning"
    ),
]

METHODS = ["spawn", "fork", "forkserver"]
TIMEOUT = 120

#: The start methods a ProcessPoolExecutor can use here.  PyPy 3.9's standard library
#: cannot submit to a pool of spawned or forkserver workers (it calls a renamed method).
POOL_METHODS = (
    set(METHODS) if hasattr(ProcessPoolExecutor, "_adjust_process_count") else {"fork"}
)


def needs_pool(method: str) -> None:
    """Skip, saying why, where a ProcessPoolExecutor cannot start *method* workers."""
    if method not in POOL_METHODS:
        pytest.skip(
            f"this interpreter's ProcessPoolExecutor cannot start {method} workers "
            f"(PyPy 3.9's concurrent.futures calls a method it renamed)"
        )


@pytest.fixture(scope="module", params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    """Each start method of multiprocessing."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def pool(method: str) -> Iterator[ContextExecutor]:
    """A ContextExecutor around a two-worker process pool, reused by the tests."""
    needs_pool(method)
    executor = ContextExecutor(
        ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method))
    )
    yield executor
    executor.shutdown(wait=True)


@pytest.fixture(autouse=True)
def _helper_xlocals_unbound() -> Iterator[None]:
    """The helper module's xlocals are unbound in this process before and after."""
    assert all(not dir(x) for x in app.ALL.values())
    yield
    assert all(not dir(x) for x in app.ALL.values())


def bound(result: dict[str, Any]) -> dict[str, Any]:
    """What a task saw bound, from its result."""
    seen: dict[str, Any] = result["bound"]
    return seen


def test_round_trip(pool: ContextExecutor) -> None:
    """The worker sees exactly the submitter's portable bindings, and the arguments."""
    with (
        app.request(user_id=7, tenant="acme", db="conn"),
        app.local_only(key="k"),
        app.shape(corner=app.Point(1, 2)),
    ):
        future = pool.submit(app.seen, 1, flag=True)
    result = future.result(TIMEOUT)
    assert result["pid"] != os.getpid()
    assert result["args"] == [1]
    assert result["kwargs"] == {"flag": True}
    assert bound(result) == {
        "request": {"user_id": 7, "tenant": "acme"},
        "shape": {"corner": app.Point(1, 2)},
    }


def test_many_tasks_on_reused_workers_each_see_their_own(pool: ContextExecutor) -> None:
    """Many tasks with different bindings on two workers each see only their own."""
    futures = []
    expected = []
    for i in range(40):
        if i % 4 == 0:
            futures.append(pool.submit(app.seen, i))
            expected.append({})
        elif i % 4 == 1:
            with app.request(user_id=i):
                futures.append(pool.submit(app.seen, i))
            expected.append({"request": {"user_id": i}})
        elif i % 4 == 2:
            with app.request(user_id=i, tenant=f"t{i}"), app.trace(span=[i, str(i)]):
                futures.append(pool.submit(app.seen, i))
            expected.append(
                {
                    "request": {"user_id": i, "tenant": f"t{i}"},
                    "trace": {"span": [i, str(i)]},
                }
            )
        else:
            with app.trace(span=None, depth=i / 2):
                futures.append(pool.submit(app.seen, i))
            expected.append({"trace": {"span": None, "depth": i / 2}})
    results = [future.result(TIMEOUT) for future in futures]
    assert [bound(r) for r in results] == expected
    assert [r["args"] for r in results] == [[i] for i in range(40)]
    pids = [r["pid"] for r in results]
    assert len(set(pids)) <= 2
    assert len(pids) > len(set(pids))  # workers were reused


def test_nested_bindings_are_carried_as_the_task_sees_them(
    pool: ContextExecutor,
) -> None:
    """Inner bindings shadow outer ones in the carrier; the task may nest its own."""
    with app.request(user_id=1, tenant="outer"):
        with app.request(tenant="inner"), app.trace(level=2):
            inner = pool.submit(app.nested, "task")
        outer = pool.submit(app.seen)
    result = inner.result(TIMEOUT)
    assert bound(result["inner"]) == {
        "request": {"user_id": 1, "tenant": "task"},
        "trace": {"level": 2},
    }
    assert bound(result["after"]) == {
        "request": {"user_id": 1, "tenant": "inner"},
        "trace": {"level": 2},
    }
    assert bound(outer.result(TIMEOUT)) == {
        "request": {"user_id": 1, "tenant": "outer"}
    }


def test_map_and_run_in_executor_carry_bindings(pool: ContextExecutor) -> None:
    """Executor.map and loop.run_in_executor carry the portable bindings too."""

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        with app.request(user_id="async"):
            return await loop.run_in_executor(pool, app.square, 3)

    with app.request(user_id="u"):
        squares = list(pool.map(app.square, range(5), timeout=TIMEOUT))
    assert squares == [(n * n, "u") for n in range(5)]
    assert asyncio.run(main()) == (9, "async")


def test_raising_task_leaves_nothing_bound_in_the_worker(method: str) -> None:
    """A task that raises leaves nothing bound for the next task on the same worker."""
    needs_pool(method)
    ctx = multiprocessing.get_context(method)
    with ContextExecutor(ProcessPoolExecutor(1, mp_context=ctx)) as single:
        with app.request(user_id=3, tenant="t"), app.trace(x=1):
            failed = single.submit(app.fail, "boom")
        after = single.submit(app.seen)
        with pytest.raises(ValueError, match=r"^boom for 3$"):
            failed.result(TIMEOUT)
        result = after.result(TIMEOUT)
    assert bound(result) == {}


def test_fork_does_not_leak_the_forking_threads_bindings() -> None:
    """Workers forked inside a binding never show its names to carried tasks."""
    ctx = multiprocessing.get_context("fork")
    with ContextExecutor(ProcessPoolExecutor(1, mp_context=ctx)) as forked:
        # The pool forks its worker at this first submit, inside every binding here.
        with app.local_only(secret="s"), app.request(user_id=1, db="conn"):
            first = forked.submit(app.seen)
        second = forked.submit(app.seen)
        assert bound(first.result(TIMEOUT)) == {"request": {"user_id": 1}}
        assert bound(second.result(TIMEOUT)) == {}


def test_errors_come_from_submit(pool: ContextExecutor) -> None:
    """Unencodable values and unpicklable tasks fail at submit, with clear errors."""
    with (
        app.request(user_id=object()),
        pytest.raises(
            UnportableError,
            match=r"^cannot carry 'user_id' of <xlocal 'portable_app.request'>: its "
            r"value, of type object, cannot be encoded",
        ),
    ):
        pool.submit(app.seen)
    with pytest.raises(
        TypeError,
        match=r"^cannot submit <function .*<lambda> at .*> to ProcessPoolExecutor: a "
        r"process pool pickles the function and its arguments, and pickling failed "
        r"\(.*\)\. Submit a function defined at module level \(not a lambda or a "
        r"local function\), with arguments that can be pickled$",
    ):
        pool.submit(lambda: None)
    with pytest.raises(TypeError, match=r"^cannot submit <function seen at .*pickling"):
        pool.submit(app.seen, threading.Lock())
    with pytest.raises(TypeError, match=r"^submit\(\) takes a callable, not int$"):
        pool.submit(3)  # type: ignore[arg-type]


def test_unpicklable_result_gets_a_clear_error(pool: ContextExecutor) -> None:
    """A result that cannot be pickled back fails naming the task, not the pool."""
    future = pool.submit(app.returns_lock)
    with pytest.raises(
        TypeError,
        match=r"^cannot send the result of <function returns_lock at .*> back from "
        r"the worker process: it returned a lock, and pickling it failed \((cannot "
        r"pickle '_thread.lock' object|Can't pickle .*)\)\. Return values that can be "
        r"pickled$",
    ):
        future.result(TIMEOUT)
    assert pool.submit(app.square, 2).result(TIMEOUT) == (4, None)


@pytest.fixture
def ghost_module() -> Iterator[types.ModuleType]:
    """A module that exists in this process only: workers cannot import it."""
    module = types.ModuleType("portable_ghost")
    exec("def ghost():\n    return 1\n", module.__dict__)
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


@pytest.mark.parametrize("fresh", ["spawn", "forkserver"])
def test_function_the_worker_cannot_import(
    fresh: str, ghost_module: types.ModuleType
) -> None:
    """Under spawn and forkserver, an unimportable function gets an error saying why."""
    needs_pool(fresh)
    ctx = multiprocessing.get_context(fresh)
    with ContextExecutor(ProcessPoolExecutor(1, mp_context=ctx)) as executor:
        future = executor.submit(ghost_module.ghost)
        with pytest.raises(
            RuntimeError,
            match=r"^cannot run the task in the worker process: unpickling it failed "
            r"\(ModuleNotFoundError: No module named 'portable_ghost'\)\. Under the "
            r"spawn and forkserver start methods the worker imports the modules that "
            r"define the function and its xlocals: define them in an importable "
            r"module, not in __main__ of an interactive session$",
        ):
            future.result(TIMEOUT)


@pytest.mark.parametrize("fresh", ["spawn", "forkserver"])
def test_xlocal_the_worker_does_not_know(fresh: str) -> None:
    """An xlocal the worker never imported is ignored there, or an error if asked."""
    unknown = xlocal(f"test_portable_processes.{fresh}", portable=True)
    ctx = multiprocessing.get_context(fresh)
    with ctx.Pool(1) as mp_pool:
        with unknown(a=1), app.trace(b=2):
            ignored = mp_pool.apply_async(carry(app.seen))
            refused = mp_pool.apply_async(carry(app.seen, unknown="error"))
        assert bound(ignored.get(TIMEOUT)) == {"trace": {"b": 2}}
        with pytest.raises(
            CarrierError,
            match=r"^cannot extract bindings from the carrier: it binds names on an "
            r"xlocal named 'test_portable_processes.\w+', which is not a portable "
            r"xlocal in this process: import the module that defines it before "
            r"extracting; nothing was bound$",
        ):
            refused.get(TIMEOUT)


def test_carry_with_multiprocessing_pool(method: str) -> None:
    """carry(fn) works with Pool.apply_async and Pool.map under each start method."""
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as mp_pool:
        with app.request(user_id="mapped"):
            squares = mp_pool.map(carry(app.square), range(6))
        with app.request(user_id=1), app.local_only(x=1):
            applied = mp_pool.apply_async(carry(app.seen), (2,), {"k": 3})
        outside = mp_pool.apply_async(carry(app.seen))
        result = applied.get(TIMEOUT)
        assert bound(outside.get(TIMEOUT)) == {}
    assert squares == [(n * n, "mapped") for n in range(6)]
    assert (result["args"], result["kwargs"]) == ([2], {"k": 3})
    assert bound(result) == {"request": {"user_id": 1}}


def test_carry_with_multiprocessing_process(method: str) -> None:
    """carry(fn) as a Process target sees the portable bindings, nothing else."""
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    with app.request(user_id=2, db="conn"), app.local_only(x=1):
        process = ctx.Process(target=carry(app.to_queue), args=(queue,))
        process.start()
    try:
        result = queue.get(timeout=TIMEOUT)
    finally:
        process.join(TIMEOUT)
    assert process.exitcode == 0
    assert result["pid"] == process.pid
    assert bound(result) == {"request": {"user_id": 2}}


def readme_block(readme: str, intro: str) -> str:
    """The literal block that follows the line ending in *intro* in README.txt."""
    lines = readme.split(intro + "\n", 1)[1].split("\n")
    block = []
    for line in lines[1:]:  # the blank line after the intro
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def test_readme_example_program(tmp_path: Path) -> None:
    """The README's process-pool program runs under spawn and prints what it shows."""
    needs_pool("spawn")
    readme = (Path(__file__).resolve().parent.parent / "README.txt").read_text("utf-8")
    program = readme_block(readme, "(``tests/test_portable_processes.py``)::")
    expected = readme_block(readme, "It prints::")
    assert program.startswith("# example.py\n")
    (tmp_path / "example.py").write_text(program)
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.stderr == ""
    assert done.returncode == 0
    assert done.stdout == expected
