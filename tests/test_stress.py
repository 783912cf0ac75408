"""Stress: thousands of units at once, each inside nested with-blocks, never mix.

Every unit binds its own id and a value of its own on two xlocals, dives a few levels
of nested with-blocks deep and gives up control at every level and many times at the
bottom (threads wait on a barrier, greenlets ``gevent.sleep(0)``, tasks ``await
asyncio.sleep(0)``), checking after every pause that it sees exactly its own bindings.
Afterwards nothing is bound in the runner and no bound value is alive.

The counts are the issue's: 200 threads, 20,000 gevent greenlets, 50,000 asyncio tasks,
and, in a subprocess under ``gevent.monkey.patch_all()``, 500 threads that are greenlets
there and 5,000 more greenlets beside them.  Units pause 39 (threads), 14 (greenlets)
and 12 (tasks) times each.  The whole file takes about 25 s on a shared 2-core machine,
most of it the 600,000 task steps.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import xlocal as xl
from xlocal import xlocal

gevent = pytest.importorskip("gevent")
monkey = pytest.importorskip("gevent.monkey")

TIMEOUT = 120

#: Nesting depth below the unit's own binding, and pauses at the deepest level.
DEPTH = 3
ROUNDS = {"thread": 30, "gevent": 5, "asyncio": 3, "patched": 5}

#: What a new thread inherits from the runner: its bindings where threads inherit
#: their creator's context (Python 3.14's -X thread_inherit_context=1), else nothing.
THREADS = ["runner"] if getattr(sys.flags, "thread_inherit_context", 0) else []


class Value:
    """A unit's bound value, watched by a weak reference."""

    __slots__ = ("__weakref__", "owner")

    def __init__(self, owner: int) -> None:
        self.owner = owner


def expect(x: Any, y: Any, i: int, value: Value, level: int) -> None:
    """Check that unit *i* sees its own bindings, *level* levels deep, and no more
    (besides the runner's, which only asyncio tasks inherit)."""
    names = ["id", "level", "value"] if level else ["id", "value"]
    own = [name for name in dir(x) if name != "runner"]
    seen = (own, x.id, x.value, getattr(x, "level", 0), dir(y), y.owner)
    assert seen == (names, i, value, level, ["level", "owner"][not level :], i), (
        f"unit {i} at level {level} sees {seen}"
    )


def unit(
    x: Any, y: Any, i: int, refs: list[Any], *, rounds: int, inherited: list[str]
) -> Iterator[None]:
    """One unit's program: it yields wherever another unit should get control."""
    assert (dir(x), dir(y)) == (inherited, []), f"unit {i} started with {dir(x)}"
    value = Value(i)
    refs.append(weakref.ref(value))
    with x(id=i, value=value), y(owner=i):
        yield
        expect(x, y, i, value, 0)
        yield from dive(x, y, i, value, 1, rounds=rounds)
        expect(x, y, i, value, 0)
        yield
        expect(x, y, i, value, 0)
    del value
    yield
    assert (dir(x), dir(y)) == (inherited, []), f"unit {i} kept {dir(x)}"


def dive(
    x: Any, y: Any, i: int, value: Value, level: int, *, rounds: int
) -> Iterator[None]:
    """Nested with-blocks down to DEPTH, pausing on the way down and back up."""
    with x(level=level), y(level=level):
        yield
        expect(x, y, i, value, level)
        if level < DEPTH:
            yield from dive(x, y, i, value, level + 1, rounds=rounds)
        else:
            for _ in range(rounds):
                yield
                expect(x, y, i, value, level)
        yield
        expect(x, y, i, value, level)


def assert_nothing_left(xs: list[Any], refs: list[Any], units: int) -> None:
    """Every unit ran, nothing is bound here, and no bound value is alive."""
    assert len(refs) == units
    assert [dir(x) for x in xs] == [[] for _ in xs]
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    assert alive == 0, f"{alive} bound values still alive"


def test_threads(make_xlocal: Any) -> None:
    """200 threads, all inside their nested blocks at each barrier, see only their own
    bindings, never the runner's."""
    x, y, n = make_xlocal("x"), make_xlocal("y"), 200
    refs: list[Any] = []
    barrier = threading.Barrier(n, timeout=TIMEOUT)
    errors: list[BaseException] = []
    pauses = [0] * n

    def run(i: int) -> None:
        try:
            for _ in unit(x, y, i, refs, rounds=ROUNDS["thread"], inherited=THREADS):
                barrier.wait()
                pauses[i] += 1
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    with x(runner="main"):
        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert x.runner == "main"
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    assert (real or errors) == []
    assert pauses == [2 * DEPTH + ROUNDS["thread"] + 3] * n
    del threads
    assert_nothing_left([x, y], refs, n)


def test_gevent(make_xlocal: Any) -> None:
    """20,000 gevent greenlets, switching at every level of their nested blocks, see
    only their own bindings."""
    x, y, n = make_xlocal("x"), make_xlocal("y"), 20_000
    refs: list[Any] = []

    def run(i: int) -> None:
        for _ in unit(x, y, i, refs, rounds=ROUNDS["gevent"], inherited=[]):
            gevent.sleep(0)

    with x(runner="main"):
        jobs = [gevent.spawn(run, i) for i in range(n)]
        done = gevent.joinall(jobs, timeout=TIMEOUT, raise_error=True)
        assert x.runner == "main"
    assert len(done) == n
    assert all(job.successful() for job in jobs)
    del jobs, done
    assert_nothing_left([x, y], refs, n)


def test_asyncio(make_xlocal: Any) -> None:
    """50,000 asyncio tasks, each starting with a copy of the runner's bindings, see
    only their own bindings besides those, and never change the runner's."""
    x, y, n = make_xlocal("x"), make_xlocal("y"), 50_000
    refs: list[Any] = []

    async def run(i: int) -> None:
        assert x.runner == "main"
        for _ in unit(x, y, i, refs, rounds=ROUNDS["asyncio"], inherited=["runner"]):
            await asyncio.sleep(0)
            assert x.runner == "main"

    async def main() -> None:
        with x(runner="main"):
            tasks = [asyncio.create_task(run(i)) for i in range(n)]
            await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
            assert dir(x) == ["runner"]

    asyncio.run(main())
    assert_nothing_left([x, y], refs, n)


# -- gevent.monkey.patch_all(): threads are greenlets ----------------------------------


def patched_main() -> None:
    """Run in a fresh process by test_gevent_monkey_patched, after patch_all()."""
    assert monkey.is_module_patched("threading")
    x, y = xlocal("x"), xlocal("y")
    threads, greenlets = 500, 5_000
    rounds = ROUNDS["patched"]
    refs: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads, timeout=TIMEOUT)
    os_threads: set[int] = set()
    os_ident = monkey.get_original("threading", "get_ident")

    def run_thread(i: int) -> None:
        os_threads.add(os_ident())
        try:
            for _ in unit(x, y, i, refs, rounds=rounds, inherited=THREADS):
                barrier.wait()
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    def run_greenlet(i: int) -> None:
        for _ in unit(x, y, i, refs, rounds=rounds, inherited=[]):
            gevent.sleep(0)

    with x(runner="main"):
        ts = [threading.Thread(target=run_thread, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        jobs = [gevent.spawn(run_greenlet, threads + i) for i in range(greenlets)]
        gevent.joinall(jobs, timeout=TIMEOUT, raise_error=True)
        for t in ts:
            t.join(TIMEOUT)
        # A thread spawned through wrap carries the runner's bindings, even here.
        carried: list[Any] = []
        t = threading.Thread(target=xl.wrap(lambda: carried.append(x.runner)))
        t.start()
        t.join(TIMEOUT)
        assert x.runner == "main"
    assert errors == [], errors[:3]
    del ts, jobs, t
    assert_nothing_left([x, y], refs, threads + greenlets)
    print(json.dumps({"units": len(refs), "os_threads": len(os_threads)}))
    print(json.dumps({"carried": carried}))


def test_gevent_monkey_patched() -> None:
    """Under gevent.monkey.patch_all(), 500 threads (greenlets there) and 5,000
    greenlets, interleaved inside their nested blocks, see only their own bindings."""
    here = Path(__file__).parent
    package = Path(xl.__file__).parent.parent
    script = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import sys\n"
        f"sys.path[:0] = [{str(package)!r}, {str(here)!r}]\n"
        "import test_stress\n"
        "test_stress.patched_main()\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [{"units": 5_500, "os_threads": 1}, {"carried": ["main"]}]
