"""Carrying bindings into new threads, greenlets, executors and tasks; snapshots."""

from __future__ import annotations

import asyncio
import contextvars
import decimal
import functools
import gc
import inspect
import os
import queue
import re
import subprocess
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import Tagged, collect, collected

import xlocal as xl
from xlocal import ContextExecutor, Snapshot, Thread, capture, isolated, wrap, xlocal
from xlocal.local import Local, LocalStack

greenlet = pytest.importorskip("greenlet")
gevent = pytest.importorskip("gevent")
gevent_pool = pytest.importorskip("gevent.pool")
gevent_threadpool = pytest.importorskip("gevent.threadpool")
eventlet = pytest.importorskip("eventlet")

TIMEOUT = 60

#: Whether new threads inherit their creator's context (Python 3.14+:
#: ``-X thread_inherit_context=1``, PYTHON_THREAD_INHERIT_CONTEXT=1, or a
#: free-threaded build's default).
INHERITS = bool(getattr(sys.flags, "thread_inherit_context", 0))

#: Starts a callable in a new unit of execution, carrying the caller's bindings the
#: way its recipe says, and returns a function that waits for the unit's result.
Spawner = Callable[[Callable[[], Any]], Callable[[], Any]]


def spawn_thread(func: Callable[[], Any]) -> Callable[[], Any]:
    result: list[Any] = []
    t = Thread(target=lambda: result.append(func()))
    t.start()
    return lambda: (t.join(TIMEOUT), result[0])[1]


def spawn_plain_thread_with_wrap(func: Callable[[], Any]) -> Callable[[], Any]:
    result: list[Any] = []
    wrapped = wrap(func)
    t = threading.Thread(target=lambda: result.append(wrapped()))
    t.start()
    return lambda: (t.join(TIMEOUT), result[0])[1]


def spawn_raw_greenlet(func: Callable[[], Any]) -> Callable[[], Any]:
    g = greenlet.greenlet(wrap(func))
    return g.switch


def spawn_gevent(func: Callable[[], Any]) -> Callable[[], Any]:
    return functools.partial(gevent.spawn(wrap(func)).get, timeout=TIMEOUT)


def spawn_gevent_pool(func: Callable[[], Any]) -> Callable[[], Any]:
    return functools.partial(POOL.spawn(wrap(func)).get, timeout=TIMEOUT)


def spawn_eventlet(func: Callable[[], Any]) -> Callable[[], Any]:
    return eventlet.spawn(wrap(func)).wait


def spawn_executor(func: Callable[[], Any]) -> Callable[[], Any]:
    return functools.partial(EXECUTOR.submit(func).result, TIMEOUT)


def spawn_gevent_threadpool(func: Callable[[], Any]) -> Callable[[], Any]:
    return functools.partial(GEVENT_EXECUTOR.submit(func).result, TIMEOUT)


POOL = gevent_pool.Pool(50)
EXECUTOR = ContextExecutor(ThreadPoolExecutor(max_workers=4))
GEVENT_EXECUTOR = ContextExecutor(gevent_threadpool.ThreadPoolExecutor(max_workers=2))

SPAWNERS: list[Spawner] = [
    spawn_thread,
    spawn_plain_thread_with_wrap,
    spawn_raw_greenlet,
    spawn_gevent,
    spawn_gevent_pool,
    spawn_eventlet,
    spawn_executor,
    spawn_gevent_threadpool,
]


@pytest.fixture(params=SPAWNERS, ids=lambda s: s.__name__.replace("spawn_", ""))
def spawn(request: pytest.FixtureRequest) -> Spawner:
    """Each way of carrying bindings into a new unit of execution."""
    return request.param  # type: ignore[no-any-return]


# -- spawned units ---------------------------------------------------------------------


def test_spawned_unit_sees_captured_bindings(spawn: Spawner, xcurrent: xlocal) -> None:
    """The new unit sees what its spawner had bound, even after the spawner's exit;
    what it binds itself never reaches the spawner."""
    go = threading.Event()

    def child() -> Any:
        assert go.wait(TIMEOUT)
        seen = (xcurrent.request, dir(xcurrent))
        with xcurrent(request="child's", extra=1):
            return seen, xcurrent.request

    with xcurrent(request="spawner's"):
        join = spawn(child)
    go.set()
    assert join() == (("spawner's", ["request"]), "child's")
    assert dir(xcurrent) == []


def test_spawn_with_nothing_bound(spawn: Spawner, xcurrent: xlocal) -> None:
    """Spawning with nothing bound gives a unit with nothing bound."""
    assert spawn(lambda: dir(xcurrent))() == []


def test_spawned_unit_with_binding_decorator(spawn: Spawner, xcurrent: xlocal) -> None:
    """A binding used as a decorator binds its names in the new unit itself."""

    def handler() -> Any:
        return xcurrent.user, xcurrent.request

    with xcurrent(user="ann"):
        join = spawn(xcurrent(request="req-1")(handler))
    assert join() == ("ann", "req-1")


def test_many_parents_each_see_their_own(xcurrent: xlocal) -> None:
    """1,000 threads started by 20 parents, all inside their blocks at once, each see
    their own parent's values."""
    parents, children = 20, 50
    barrier = threading.Barrier(parents * children, timeout=TIMEOUT)
    seen: list[tuple[int, int]] = []

    def child(j: int) -> None:
        barrier.wait()
        with xcurrent(child=j):
            barrier.wait()
            seen.append((xcurrent.parent, xcurrent.child))

    def parent(i: int) -> list[Thread]:
        with xcurrent(parent=i):
            threads = [Thread(target=child, args=(j,)) for j in range(children)]
        for t in threads:
            t.start()
        return threads

    threads = [t for i in range(parents) for t in parent(i)]
    for t in threads:
        t.join(TIMEOUT)
    assert sorted(seen) == [(i, j) for i in range(parents) for j in range(children)]


def test_many_parents_gevent(xcurrent: xlocal) -> None:
    """1,000 greenlets spawned with wrap by 100 parent greenlets, interleaved, each see
    their own parent's values."""
    seen: list[tuple[int, int]] = []

    def child(j: int) -> None:
        gevent.sleep(0)
        with xcurrent(child=j):
            gevent.sleep(0)
            seen.append((xcurrent.parent, xcurrent.child))

    def parent(i: int) -> None:
        with xcurrent(parent=i):
            jobs = [gevent.spawn(wrap(child), j) for j in range(10)]
            gevent.sleep(0)
        gevent.joinall(jobs, timeout=TIMEOUT, raise_error=True)

    gevent.joinall(
        [gevent.spawn(parent, i) for i in range(100)], timeout=TIMEOUT, raise_error=True
    )
    assert sorted(seen) == [(i, j) for i in range(100) for j in range(10)]


def test_many_parents_executor(xcurrent: xlocal) -> None:
    """1,000 tasks submitted by 10 parent threads to one pool, in barrier-synchronised
    batches, each see their own parent's values."""
    workers = 8
    barrier = threading.Barrier(workers, timeout=TIMEOUT)
    executor = ContextExecutor(ThreadPoolExecutor(max_workers=workers))

    def child(j: int) -> tuple[int, int]:
        barrier.wait()
        return xcurrent.parent, j

    def parent(i: int) -> list[Any]:
        with xcurrent(parent=i):
            return list(executor.map(child, range(100)))

    with executor, ThreadPoolExecutor(max_workers=10) as parents:
        results = [r for rs in parents.map(parent, range(10)) for r in rs]
    assert sorted(results) == [(i, j) for i in range(10) for j in range(100)]


# -- wrap ------------------------------------------------------------------------------


def test_wrapped_callable_reused_concurrently(xcurrent: xlocal) -> None:
    """One wrapped callable runs in many threads at once; a shared Context cannot."""
    n = 8
    barrier = threading.Barrier(n, timeout=TIMEOUT)

    def work(i: int) -> Any:
        with xcurrent(i=i):
            barrier.wait()
            return xcurrent.request, xcurrent.i

    with xcurrent(request="shared"):
        wrapped = wrap(work)
        context = contextvars.copy_context()
    with ThreadPoolExecutor(n) as pool:
        assert sorted(pool.map(wrapped, range(n))) == [("shared", i) for i in range(n)]

    # The trap wrap avoids: one Context entered by a second execution at once.
    entered = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        entered.set()
        release.wait(TIMEOUT)

    t = threading.Thread(target=context.run, args=(hold,))
    t.start()
    assert entered.wait(TIMEOUT)
    try:
        context.run(lambda: None)
    except RuntimeError as e:
        errors.append(e)
    release.set()
    t.join(TIMEOUT)
    assert "is already entered" in str(errors[0])


def test_wrapped_callable_reentered_by_itself(xcurrent: xlocal) -> None:
    """A wrapped callable may call itself recursively."""

    def countdown(n: int) -> Any:
        if n == 0:
            return xcurrent.request
        with xcurrent(depth=n):
            return wrapped(n - 1)

    with xcurrent(request="r"):
        wrapped = wrap(countdown)
    assert wrapped(3) == "r"


def test_wrap_calls_are_independent(xcurrent: xlocal) -> None:
    """What one call of a wrapped callable binds is gone for the next call."""

    def peek_and_bind() -> Any:
        seen = dir(xcurrent)
        xcurrent(extra=1).__enter__()  # never exited: dies with this call's copy
        return seen

    with xcurrent(request="r"):
        wrapped = wrap(peek_and_bind)
    assert wrapped() == ["request"]
    assert wrapped() == ["request"]
    assert dir(xcurrent) == []


def test_wrap_keeps_metadata() -> None:
    """wrap keeps the name, docstring and signature of what it wraps."""

    def handler(request: str, *, user: str = "ann") -> str:
        """Handle a request."""
        return request

    wrapped = wrap(handler)
    assert wrapped.__name__ == "handler"
    assert wrapped.__doc__ == "Handle a request."
    assert inspect.signature(wrapped) == inspect.signature(handler)
    assert wrapped.__wrapped__ is handler  # type: ignore[attr-defined]


def test_wrap_coroutine_function(xcurrent: xlocal) -> None:
    """A wrapped coroutine function runs every step with the captured bindings."""

    async def handler() -> Any:
        await asyncio.sleep(0)
        with xcurrent(inner=1):
            await asyncio.sleep(0)
            return xcurrent.request, dir(xcurrent)

    with xcurrent(request="captured"):
        wrapped = wrap(handler)
    assert inspect.iscoroutinefunction(wrapped)

    async def main() -> Any:
        with xcurrent(request="caller's", other=2):
            result = await wrapped()
            assert dir(xcurrent) == ["other", "request"]
            return result

    assert asyncio.run(main()) == ("captured", ["inner", "request"])


def test_wrap_generator_function(xcurrent: xlocal) -> None:
    """A wrapped generator function's generator runs in the captured bindings."""

    def gen() -> Iterator[Any]:
        yield xcurrent.request
        yield dir(xcurrent)

    with xcurrent(request="captured"):
        wrapped = wrap(gen)
    with xcurrent(other=1):
        assert list(wrapped()) == ["captured", ["request"]]


def test_wrap_refuses_non_callables() -> None:
    """wrap and isolated say so when given something that cannot be called."""
    with pytest.raises(TypeError, match=r"^wrap\(\) takes a callable, not int$"):
        wrap(3)  # type: ignore[type-var]
    with pytest.raises(TypeError, match=r"^isolated\(\) takes a callable, not str$"):
        isolated("f")  # type: ignore[type-var]


# -- the binding as a decorator, and async with ----------------------------------------


def test_binding_decorator(xcurrent: xlocal) -> None:
    """A decorated function runs with the names bound on top of the caller's."""

    @xcurrent(role="admin")
    def handler(x: int) -> Any:
        return x, xcurrent.user, xcurrent.role

    with xcurrent(user="ann", role="guest"):
        assert handler(1) == (1, "ann", "admin")
        assert xcurrent.role == "guest"
    with pytest.raises(AttributeError, match="'user' is not bound"):
        handler(3)


def test_binding_decorator_keeps_metadata(xcurrent: xlocal) -> None:
    """The decorated function keeps its name, docstring and signature."""

    def handler(request: str, *, user: str = "ann") -> str:
        """Handle a request."""
        return request

    decorated = xcurrent(role="admin")(handler)
    assert decorated.__name__ == "handler"
    assert decorated.__doc__ == "Handle a request."
    assert inspect.signature(decorated) == inspect.signature(handler)


def test_binding_decorator_on_coroutine_function(xcurrent: xlocal) -> None:
    """For a coroutine function the binding covers the whole awaited call."""

    @xcurrent(role="admin")
    async def handler() -> Any:
        await asyncio.sleep(0)
        return xcurrent.role

    assert inspect.iscoroutinefunction(handler)

    async def main() -> Any:
        result = await handler()
        assert dir(xcurrent) == []
        return result

    assert asyncio.run(main()) == "admin"


def test_binding_decorator_on_generator_function(xcurrent: xlocal) -> None:
    """A decorated generator runs its steps with the binding; its consumer never sees
    the binding, nor the generator's own with-blocks."""

    @xcurrent(role="gen")
    def gen() -> Iterator[Any]:
        yield xcurrent.user, xcurrent.role
        with xcurrent(inner=1):
            yield dir(xcurrent)
        yield dir(xcurrent)

    with xcurrent(user="ann"):
        it = gen()
    steps = []
    for step in it:
        steps.append(step)
        assert dir(xcurrent) == []
    assert steps == [("ann", "gen"), ["inner", "role", "user"], ["role", "user"]]


def test_binding_decorator_on_async_generator_function(xcurrent: xlocal) -> None:
    """A decorated async generator keeps its binding to itself and passes values and
    exceptions through."""

    @xcurrent(role="agen")
    async def agen() -> AsyncIterator[Any]:
        sent = yield xcurrent.role
        with xcurrent(inner=1):
            try:
                yield sent, dir(xcurrent)
            except KeyError as e:
                yield f"caught {e}"

    async def main() -> list[Any]:
        it = agen()
        steps = [await it.__anext__()]
        steps.append(await it.asend("hello"))
        assert dir(xcurrent) == []
        steps.append(await it.athrow(KeyError("k")))
        with pytest.raises(StopAsyncIteration):
            await it.__anext__()
        await it.aclose()
        return steps

    assert asyncio.run(main()) == ["agen", ("hello", ["inner", "role"]), "caught 'k'"]


def test_binding_decorator_refuses_non_callables(xcurrent: xlocal) -> None:
    """Decorating something that cannot be called says how to bind instead."""
    with pytest.raises(
        TypeError,
        match=r"^<Binding xcurrent\(a=\.\.\.\)> decorates a callable, not int; to bind "
        r"names for a block, use `with xcurrent\(\.\.\.\):`$",
    ):
        xcurrent(a=1)(3)


def test_async_with(xcurrent: xlocal) -> None:
    """``async with`` binds like ``with``, also across awaits."""

    async def main() -> Any:
        async with xcurrent(a=1) as x:
            assert x is xcurrent
            await asyncio.sleep(0)
            result = xcurrent.a
        assert dir(xcurrent) == []
        return result

    assert asyncio.run(main()) == 1


# -- Thread ----------------------------------------------------------------------------


def test_thread_is_a_drop_in(xcurrent: xlocal) -> None:
    """xlocal.Thread takes threading.Thread's arguments and is one."""
    out: list[Any] = []
    with xcurrent(request="r"):
        t = Thread(
            target=lambda a, b=None: out.append((a, b, xcurrent.request)),
            args=(1,),
            kwargs={"b": 2},
            name="worker",
            daemon=True,
        )
    assert isinstance(t, threading.Thread)
    assert (t.name, t.daemon) == ("worker", True)
    t.start()
    t.join(TIMEOUT)
    assert out == [(1, 2, "r")]


def test_thread_subclass_overriding_run(xcurrent: xlocal) -> None:
    """A subclass that overrides run() gets the creator's bindings too."""

    class Worker(Thread):
        def run(self) -> None:
            self.seen = xcurrent.request

    with xcurrent(request="r"):
        w = Worker()
    w.start()
    w.join(TIMEOUT)
    assert w.seen == "r"


def test_thread_subclass_keeping_run(xcurrent: xlocal) -> None:
    """A subclass that keeps Thread's run() (adding only attributes) runs its target
    with the creator's bindings."""

    class Named(Thread):
        kind = "named"

    out: list[Any] = []
    with xcurrent(request="r"):
        t = Named(target=lambda: out.append(xcurrent.request))
    t.start()
    t.join(TIMEOUT)
    assert out == ["r"]
    assert "run" not in Named.__dict__


def test_thread_subclass_run_keeps_its_identity() -> None:
    """An overriding run() keeps its name, qualified name and docstring."""

    class Worker(Thread):
        def run(self) -> None:
            """Do the work."""

    assert Worker.run.__name__ == "run"
    assert Worker.run.__qualname__.endswith("Worker.run")
    assert Worker.run.__doc__ == "Do the work."


def test_thread_subclass_passes_class_keywords_on() -> None:
    """Class keywords of a Thread subclass reach the other bases' __init_subclass__,
    and unknown ones are refused as for any class."""

    class Worker(Thread, Tagged, tag="io"):
        pass

    assert Worker.tag == "io"
    with pytest.raises(TypeError, match="keyword argument"):  # worded per interpreter

        class Odd(Thread, colour="red"):  # type: ignore[call-arg]
            pass


# -- executors and asyncio -------------------------------------------------------------


def test_executor_refuses_non_executors() -> None:
    """ContextExecutor says what it wraps when given something else."""
    with pytest.raises(
        TypeError,
        match=r"^ContextExecutor wraps a concurrent.futures.Executor, not list$",
    ):
        ContextExecutor([])  # type: ignore[arg-type]


def test_executor_shutdown_and_repr() -> None:
    """Shutting down the wrapper shuts down the executor it wraps."""
    inner = ThreadPoolExecutor(1)
    executor = ContextExecutor(inner)
    assert repr(executor).startswith("<ContextExecutor of <concurrent.futures")
    executor.shutdown(cancel_futures=True)
    with pytest.raises(RuntimeError, match="shutdown"):
        inner.submit(print)


class _Pool(ThreadPoolExecutor):
    """A real one-worker thread pool that reports each shutdown call on *events*."""

    def __init__(self, events: queue.Queue[Any]) -> None:
        super().__init__(1)
        self.events = events

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.events.put(("shutdown", wait, cancel_futures))
        super().shutdown(wait, cancel_futures=cancel_futures)


def _busy_pool() -> tuple[ContextExecutor, queue.Queue[Any], threading.Event, Any, Any]:
    """A ContextExecutor around a one-worker pool held busy by a first task, with a
    second task queued behind it.

    Returns the executor, the queue of the pool's shutdown calls, the event that lets
    the first task finish, and the two futures.
    """
    events: queue.Queue[Any] = queue.Queue()
    started, release = threading.Event(), threading.Event()

    def hold() -> str:
        started.set()
        assert release.wait(TIMEOUT)
        return "held"

    executor = ContextExecutor(_Pool(events))
    running = executor.submit(hold)
    assert started.wait(TIMEOUT)
    queued = executor.submit(lambda: "queued")
    return executor, events, release, running, queued


def test_executor_shutdown_defaults_wait_and_keep_queued() -> None:
    """shutdown() shuts the wrapped pool down with concurrent.futures' defaults
    (wait=True, cancel_futures=False): it returns once the running and the queued
    tasks have run."""
    executor, events, release, running, queued = _busy_pool()

    def shut_down() -> None:
        executor.shutdown()
        events.put("returned")

    closer = threading.Thread(target=shut_down)
    closer.start()
    assert events.get(timeout=TIMEOUT) == ("shutdown", True, False)
    assert not queued.cancelled()
    release.set()
    assert events.get(timeout=TIMEOUT) == "returned"
    closer.join(TIMEOUT)
    assert (running.result(0), queued.result(0)) == ("held", "queued")
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit(print)


def test_executor_shutdown_forwards_wait_and_cancel_futures() -> None:
    """shutdown(wait=False, cancel_futures=True) cancels the queued task and returns
    without waiting; with cancel_futures=False the queued task still runs."""
    executor, events, release, running, queued = _busy_pool()
    executor.shutdown(wait=False, cancel_futures=True)
    assert events.get_nowait() == ("shutdown", False, True)
    assert queued.cancelled()
    assert not running.done()
    release.set()
    assert running.result(TIMEOUT) == "held"

    executor, events, release, running, queued = _busy_pool()
    executor.shutdown(wait=False, cancel_futures=False)
    assert events.get_nowait() == ("shutdown", False, False)
    assert not queued.cancelled()
    release.set()
    assert queued.result(TIMEOUT) == "queued"


def test_run_in_executor(xcurrent: xlocal) -> None:
    """loop.run_in_executor carries bindings with a ContextExecutor or with wrap."""

    def work() -> Any:
        return xcurrent.request

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        with xcurrent(request="r"), ThreadPoolExecutor(2) as pool:
            plain = await loop.run_in_executor(pool, lambda: dir(xcurrent))
            carried = await loop.run_in_executor(ContextExecutor(pool), work)
            wrapped = await loop.run_in_executor(pool, wrap(work))
        return plain, carried, wrapped

    # A plain pool's worker started inside the binding inherits it with the flag.
    plain = ["request"] if INHERITS else []
    assert asyncio.run(main()) == (plain, "r", "r")


def test_to_thread_copies_bindings(xcurrent: xlocal) -> None:
    """asyncio.to_thread already runs with the caller's bindings."""

    def work() -> Any:
        with xcurrent(inner=1):
            return xcurrent.request

    async def main() -> Any:
        with xcurrent(request="r"):
            result = await asyncio.to_thread(work)
            assert dir(xcurrent) == ["request"]
            return result

    assert asyncio.run(main()) == "r"


def test_many_parents_run_in_executor(xcurrent: xlocal) -> None:
    """1,000 calls from 100 tasks through run_in_executor each see their own task's
    values."""
    executor = ContextExecutor(ThreadPoolExecutor(max_workers=8))

    def child(j: int) -> tuple[int, int]:
        return xcurrent.parent, j

    async def parent(i: int) -> list[Any]:
        loop = asyncio.get_running_loop()
        with xcurrent(parent=i):
            calls = [loop.run_in_executor(executor, child, j) for j in range(10)]
            await asyncio.sleep(0)
        return list(await asyncio.gather(*calls))

    async def main() -> list[Any]:
        results = await asyncio.gather(*(parent(i) for i in range(100)))
        return [r for rs in results for r in rs]

    with executor:
        assert sorted(asyncio.run(main())) == [
            (i, j) for i in range(100) for j in range(10)
        ]


# -- generators ------------------------------------------------------------------------


def numbers(xcurrent: xlocal) -> Iterator[Any]:
    with xcurrent(user="generator"):
        yield xcurrent.user
        yield xcurrent.user


def test_plain_generator_leaks(xcurrent: xlocal) -> None:
    """Without isolated, a generator's with-block is seen by its consumer: the leak."""
    gen = numbers(xcurrent)
    with xcurrent(user="ann"):
        assert next(gen) == "generator"
        assert xcurrent.user == "generator"  # leaked
        assert next(gen) == "generator"
        with pytest.raises(StopIteration):
            next(gen)
        assert xcurrent.user == "ann"


def test_isolated_generator_keeps_its_bindings(xcurrent: xlocal) -> None:
    """An isolated generator's with-block stays inside it, at every step."""
    gen = isolated(numbers)(xcurrent)
    with xcurrent(user="ann"):
        assert next(gen) == "generator"
        assert xcurrent.user == "ann"
        assert next(gen) == "generator"
        assert xcurrent.user == "ann"
    assert list(gen) == []


def test_isolated_generator_sees_creation_bindings(xcurrent: xlocal) -> None:
    """An isolated generator runs with the bindings its creator had, not its
    consumer's."""

    @isolated
    def gen() -> Iterator[Any]:
        yield getattr(xcurrent, "user", None)

    with xcurrent(user="creator"):
        it = gen()
    with xcurrent(user="consumer"):
        assert next(it) == "creator"


def test_isolated_generator_send_throw_close(xcurrent: xlocal) -> None:
    """send, throw and close reach the generator, in its own bindings."""
    closed: list[Any] = []

    @isolated
    def gen() -> Iterator[Any]:
        with xcurrent(mine=1):
            try:
                received = yield "first"
                yield received, xcurrent.mine
                yield "after"
            except KeyError:
                yield "caught", xcurrent.mine
            finally:
                closed.append(dir(xcurrent))

    it = gen()
    assert next(it) == "first"
    assert it.send("hello") == ("hello", 1)
    assert it.throw(KeyError("k")) == ("caught", 1)
    it.close()
    assert closed == [["mine"]]
    assert dir(xcurrent) == []


def test_abandoned_isolated_generator_closes_in_its_context(xcurrent: xlocal) -> None:
    """An isolated generator dropped mid-block exits its block in its own bindings."""
    closed: list[Any] = []

    @isolated
    def gen() -> Iterator[int]:
        with xcurrent(mine=1):
            try:
                yield 1
            finally:
                closed.append(dir(xcurrent))

    it = gen()
    next(it)
    with xcurrent(other=2):
        del it
        collect()  # finalizes the generator here on PyPy too
    assert closed == [["mine"]]


def test_finished_step_dropped_inside_its_async_generator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A finished step of an isolated async generator, freed while a later step runs
    in the generator's context, is left alone: finalizing it reports no error."""
    unraisable: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(u.exc_value))
    held: list[Any] = []

    @isolated
    async def items() -> AsyncIterator[int]:
        yield 1
        held.clear()  # frees the first step, inside this generator's context
        yield 2

    async def main() -> list[int]:
        stream = items()
        held.append(stream.__anext__())
        first = await held[0]
        second = await stream.__anext__()
        await stream.aclose()
        return [first, second]

    assert asyncio.run(main()) == [1, 2]
    collect()
    assert unraisable == []


def test_isolated_async_generator(xcurrent: xlocal) -> None:
    """An isolated async generator keeps its with-blocks to itself."""

    @isolated
    async def agen() -> AsyncIterator[Any]:
        with xcurrent(user="agen"):
            yield xcurrent.user
            await asyncio.sleep(0)
            yield xcurrent.user

    async def main() -> list[Any]:
        seen = []
        with xcurrent(user="ann"):
            async for item in agen():
                seen.append((item, xcurrent.user))
        return seen

    assert asyncio.run(main()) == [("agen", "ann"), ("agen", "ann")]


# -- snapshots -------------------------------------------------------------------------


def test_snapshot_run_later(xcurrent: xlocal) -> None:
    """A snapshot runs code later with the bindings of its capture."""
    with xcurrent(request="r"):
        snapshot = capture()
    assert isinstance(snapshot, Snapshot)
    assert snapshot.run(lambda a, b: (a, b, xcurrent.request), 1, b=2) == (1, 2, "r")
    assert snapshot.run(dir, xcurrent) == ["request"]
    assert dir(xcurrent) == []


def test_snapshot_is_immutable(xcurrent: xlocal) -> None:
    """Bindings made later, or inside a run, never change a snapshot."""
    with xcurrent(a=1):
        snapshot = capture()
        with xcurrent(a=2):
            pass
    snapshot.run(lambda: xcurrent(b=2).__enter__())
    assert snapshot.run(dir, xcurrent) == ["a"]


def test_snapshot_bindings(make_xlocal: Any) -> None:
    """A snapshot shows the values it holds for an xlocal, read-only."""
    one, two = make_xlocal("one"), make_xlocal("two")
    with one(a=1, b=2), one(b=3):
        snapshot = capture()
    bindings = snapshot.bindings(one)
    assert dict(bindings) == {"a": 1, "b": 3}
    assert dict(snapshot.bindings(two)) == {}
    with pytest.raises(TypeError):
        bindings["a"] = 5  # type: ignore[index]
    with pytest.raises(TypeError, match=r"^Snapshot.bindings\(\) takes an xlocal, not"):
        snapshot.bindings("one")  # type: ignore[arg-type]
    assert repr(snapshot) == "<Snapshot one(a, b)>"
    with two(c=1):
        assert repr(capture()) == "<Snapshot two(c)>"
    assert repr(capture()) == "<Snapshot (nothing bound)>"


def test_snapshot_repr_lists_only_bindings(xcurrent: xlocal) -> None:
    """A snapshot's repr lists the xlocal bindings only: not the data of a Local it
    carries (a dict too), nor dict-valued context variables of the program's own."""
    local = Local(contextvars.ContextVar("data"))
    own: contextvars.ContextVar[dict[str, int]] = contextvars.ContextVar("own")

    def take() -> Snapshot:
        local.user = "ann"
        own.set({"a": 1})
        with xcurrent(request="r"):
            return capture()

    snapshot = contextvars.copy_context().run(take)
    assert snapshot.run(lambda: local.user) == "ann"
    assert repr(snapshot) == "<Snapshot xcurrent(request)>"


def test_spawn_exports() -> None:
    """The helpers are exported at the top level, under their public module."""
    for name in [
        "ContextExecutor",
        "Snapshot",
        "Thread",
        "capture",
        "isolated",
        "wrap",
    ]:
        assert getattr(xl, name).__module__ == "xlocal"
        assert name in xl.__all__


def test_binding_decorator_async_generator_closed_early(xcurrent: xlocal) -> None:
    """Closing a decorated async generator mid-way closes the inner one, inside its
    own bindings."""
    closed: list[Any] = []

    @xcurrent(role="agen")
    async def agen() -> AsyncIterator[int]:
        with xcurrent(inner=1):
            try:
                yield 1
                yield 2
            finally:
                closed.append(dir(xcurrent))

    async def main() -> None:
        it = agen()
        assert await it.__anext__() == 1
        await it.aclose()
        assert dir(xcurrent) == []

    asyncio.run(main())
    assert closed == [["inner", "role"]]


@pytest.mark.cpython_only(
    "reference counting frees an object when its last reference goes"
)
def test_thread_releases_captured_bindings_when_done(xcurrent: xlocal) -> None:
    """A finished xlocal.Thread keeps no captured value alive, without the collector."""

    class Value:
        pass

    value = Value()
    ref = weakref.ref(value)
    with xcurrent(v=value):
        t = Thread(target=lambda: xcurrent.v)
    del value
    gc.disable()
    try:
        t.start()
        t.join(TIMEOUT)
        assert ref() is None
    finally:
        gc.enable()


class Service:
    """Methods of each kind, to wrap bound."""

    async def fetch(self, n: int) -> Any:
        await asyncio.sleep(0)
        return n, getattr(_current, "request", None)

    def rows(self) -> Iterator[Any]:
        yield getattr(_current, "request", None)

    async def __call__(self, n: int) -> Any:
        return await self.fetch(n)


_current = xlocal("_current")


def _async_fetch(n: int) -> Any:
    return Service().fetch(n)


def _marked() -> Callable[[int], Any]:
    """A plain function marked as a coroutine function (Python 3.12+)."""

    def fetch(n: int) -> Any:
        return _async_fetch(n)

    return inspect.markcoroutinefunction(fetch)  # type: ignore[attr-defined,no-any-return]


async def _attributed(n: int) -> Any:
    return n, getattr(_current, "request", None)


_attributed.tag = "has attributes"  # type: ignore[attr-defined]

COROUTINE_FUNCTIONS = {
    "partial": functools.partial(Service.fetch, Service()),
    "bound method": Service().fetch,
    "function with attributes": _attributed,
    "object with async __call__": Service(),
}
if sys.version_info >= (3, 12):
    COROUTINE_FUNCTIONS["marked with inspect"] = _marked()


@pytest.mark.parametrize("func", COROUTINE_FUNCTIONS.values(), ids=COROUTINE_FUNCTIONS)
def test_wrap_recognises_coroutine_functions(func: Callable[[int], Any]) -> None:
    """wrap and the binding decorator tell coroutine functions in every form, so that
    their steps run in the bindings, and frameworks that look (inspect's
    iscoroutinefunction) see a coroutine function."""
    with _current(request="captured"):
        wrapped = wrap(func)
    assert inspect.iscoroutinefunction(wrapped)
    assert asyncio.run(wrapped(7)) == (7, "captured")
    decorated = _current(request="bound")(func)
    assert inspect.iscoroutinefunction(decorated)
    assert asyncio.run(decorated(7)) == (7, "bound")


def test_wrap_recognises_bound_generator_methods() -> None:
    """A bound generator method is wrapped as a generator."""
    with _current(request="captured"):
        wrapped = wrap(Service().rows)
    with _current(request="consumer"):
        assert list(wrapped()) == ["captured"]


# -- callables that do not say what they make ------------------------------------------


async def _seen(n: int) -> Any:
    await asyncio.sleep(0)
    return n, getattr(_current, "request", None)


class _AsyncCall:
    """An object whose ``__call__`` is a coroutine function."""

    async def __call__(self, n: int) -> Any:
        return await _seen(n)


class _Awaitable:
    """An awaitable that is not a coroutine; its body runs when awaited."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __await__(self) -> Iterator[Any]:
        yield from asyncio.sleep(0).__await__()
        return self.n, getattr(_current, "request", None)


def _sync_decorated(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def call(*args: Any) -> Any:
        return func(*args)

    return call


def _returns_coroutine(n: int) -> Any:
    return _seen(n)


def _returns_task(n: int) -> Any:
    return asyncio.ensure_future(_seen(n))


ASYNC_CALLABLES: dict[str, Callable[[int], Any]] = {
    "object with async __call__": _AsyncCall(),
    "partial of a coroutine function": functools.partial(_seen),
    "function returning a coroutine": _returns_coroutine,
    "sync-decorated coroutine function": _sync_decorated(_seen),
    "function returning an awaitable": _Awaitable,
    "function returning a task": _returns_task,
}


@pytest.mark.parametrize("func", ASYNC_CALLABLES.values(), ids=ASYNC_CALLABLES)
def test_binding_reaches_the_awaited_body_of_any_async_callable(
    func: Callable[[int], Any],
) -> None:
    """The binding decorator covers the awaited body of a callable that returns
    something to await, whatever the callable looks like."""
    bound = _current(request="bound")(func)

    async def main() -> Any:
        result = await bound(3)
        assert dir(_current) == []
        return result

    assert asyncio.run(main()) == (3, "bound")


@pytest.mark.parametrize("func", ASYNC_CALLABLES.values(), ids=ASYNC_CALLABLES)
def test_wrap_reaches_the_awaited_body_of_any_async_callable(
    func: Callable[[int], Any],
) -> None:
    """wrap runs the awaited body of a callable that returns something to await with
    the captured bindings, whatever the callable looks like."""
    with _current(request="captured"):
        wrapped = wrap(func)

    async def main() -> Any:
        with _current(request="awaiter"):
            return await wrapped(4)

    assert asyncio.run(main()) == (4, "captured")


def _gen_of(n: int) -> Iterator[Any]:
    yield n, getattr(_current, "request", None)


async def _agen_of(n: int) -> AsyncIterator[Any]:
    yield n, getattr(_current, "request", None)


def _returns_gen(n: int) -> Any:
    return _gen_of(n)


def _returns_agen(n: int) -> Any:
    return _agen_of(n)


def test_binding_reaches_generators_returned_by_plain_functions() -> None:
    """A plain function that returns a generator or async generator gets the binding
    in every step, and its consumer does not see it."""
    gen = _current(request="bound")(_returns_gen)
    agen = _current(request="bound")(_returns_agen)
    assert list(gen(1)) == [(1, "bound")]

    async def main() -> list[Any]:
        items = [item async for item in agen(2)]
        assert dir(_current) == []
        return items

    assert asyncio.run(main()) == [(2, "bound")]


def test_wrap_reaches_generators_returned_by_plain_functions() -> None:
    """wrap steps a generator or async generator returned by a plain function in the
    captured bindings."""
    with _current(request="captured"):
        gen = wrap(_returns_gen)
        agen = wrap(_returns_agen)
    with _current(request="consumer"):
        assert list(gen(1)) == [(1, "captured")]

    async def main() -> list[Any]:
        return [item async for item in agen(2)]

    assert asyncio.run(main()) == [(2, "captured")]


# -- what the spawn helpers carry ------------------------------------------------------

_users_var: contextvars.ContextVar[list[str]] = contextvars.ContextVar("users_var")


def _changes_decimal_and_reads_own_var() -> Any:
    decimal.getcontext().prec = 3
    return _current.request, _users_var.get(None), decimal.getcontext().prec


SPAWNED_RUNS: dict[str, Callable[[Callable[[], Any]], Any]] = {
    "Thread": lambda f: spawn_thread(f)(),
    "wrap in a thread": lambda f: spawn_plain_thread_with_wrap(f)(),
    "ContextExecutor": lambda f: spawn_executor(f)(),
    "greenlet": lambda f: spawn_raw_greenlet(f)(),
    "Snapshot.run": lambda f: capture().run(f),
}


@pytest.mark.parametrize("run", SPAWNED_RUNS.values(), ids=SPAWNED_RUNS)
def test_spawn_helpers_carry_only_xlocal_state(run: Callable[..., Any]) -> None:
    """A spawned execution gets the spawner's xlocal bindings, a decimal context of
    its own, and none of the spawner's other context variables."""
    before = decimal.getcontext().prec
    token = _users_var.set(["mutable", "state"])
    try:
        with _current(request="carried"):
            assert run(_changes_decimal_and_reads_own_var) == ("carried", None, 3)
    finally:
        _users_var.reset(token)
    assert decimal.getcontext().prec == before


def test_snapshot_holds_local_data(xcurrent: xlocal) -> None:
    """Data of the werkzeug-compatible Local and LocalStack is carried like bindings."""
    local, stack = Local(), LocalStack[str]()

    def hold() -> Any:
        local.user = "ann"
        stack.push("top")
        return capture()

    snapshot = contextvars.Context().run(hold)
    assert snapshot.run(lambda: (local.user, stack.top)) == ("ann", "top")


@pytest.mark.cpython_only(
    "values are freed by reference counting, not later by the collector"
)
def test_never_started_thread_releases_its_bindings(xcurrent: xlocal) -> None:
    """An xlocal.Thread that never starts holds its captured values only as long as
    the thread object lives, without the collector."""

    class Value:
        pass

    value = Value()
    ref = weakref.ref(value)
    gc.disable()
    try:
        with xcurrent(v=value):
            t = Thread(target=lambda: None)
        del value, t
        assert ref() is None
    finally:
        gc.enable()


def test_subclass_run_chain_runs_once_in_the_snapshot(xcurrent: xlocal) -> None:
    """Subclasses whose run() calls super().run() run the whole chain in one copy of
    the captured bindings, and the thread object lets go of them."""
    seen: list[Any] = []

    class Base(Thread):
        def run(self) -> None:
            with xcurrent(level="base"):
                seen.append((xcurrent.request, xcurrent.level))

    class Child(Base):
        def run(self) -> None:
            with xcurrent(level="child"):
                seen.append((xcurrent.request, xcurrent.level))
                super().run()
                seen.append(xcurrent.level)

    with xcurrent(request="r"):
        t = Child()
    t.start()
    t.join(TIMEOUT)
    assert seen == [("r", "child"), ("r", "base"), "child"]
    assert "_xlocal_snapshot" not in t.__dict__


class _RequestLike:
    """An awaitable that is also an async context manager, as HTTP clients' requests."""

    def __await__(self) -> Iterator[Any]:
        yield from asyncio.sleep(0).__await__()
        return "awaited"

    async def __aenter__(self) -> str:
        return "entered"

    async def __aexit__(self, *exc: object) -> None:
        pass


def test_awaitables_with_other_uses_are_handed_back() -> None:
    """An awaitable that is also an async context manager comes back as it is, so
    ``async with`` on it still works through the decorator and wrap."""
    bound = _current(request="bound")(_RequestLike)
    with _current(request="captured"):
        wrapped = wrap(_RequestLike)

    async def main() -> list[Any]:
        seen = []
        for make in (bound, wrapped):
            request = make()
            assert isinstance(request, _RequestLike)
            async with request as entered:
                seen.append(entered)
            seen.append(await make())
        return seen

    assert asyncio.run(main()) == ["entered", "awaited", "entered", "awaited"]


def test_wrap_keeps_what_update_wrapper_copies() -> None:
    """What wrap() returns shows itself as the function it wraps, on both cores:
    name, qualified name, module, doc, annotations, __wrapped__, the repr of a
    function; it takes attributes of its own, binds as a method in a class, and can
    be weakly referenced."""
    x = xlocal("x")

    def handler(n: int) -> str:
        """Handle *n*."""
        return f"{x.user} {n}"

    with x(user="ann"):
        wrapped = wrap(handler)
    assert wrapped.__name__ == "handler"
    assert wrapped.__qualname__ == handler.__qualname__
    assert wrapped.__module__ == __name__
    assert wrapped.__doc__ == "Handle *n*."
    assert wrapped.__annotations__ == handler.__annotations__
    assert wrapped.__wrapped__ is handler
    assert repr(wrapped).startswith(f"<function {handler.__qualname__} at 0x")
    assert inspect.signature(wrapped) == inspect.signature(handler)
    wrapped.mark = 1  # type: ignore[attr-defined]
    assert wrapped.mark == 1  # type: ignore[attr-defined]
    assert not hasattr(handler, "mark")
    assert weakref.ref(wrapped)() is wrapped

    class Holder:
        method = wrap(lambda self, n: (type(self).__name__, n))

    assert Holder().method(2) == ("Holder", 2)
    assert wrapped(1) == "ann 1"


def test_capture_leaves_out_other_variables_whatever_the_context_holds() -> None:
    """A snapshot of a context that holds a ContextVar of the program's own has only
    xlocal's state, and one of a context that holds only xlocal's state has all of
    it, on both cores."""
    x = xlocal("x")
    mine: contextvars.ContextVar[str] = contextvars.ContextVar("mine")

    def seen() -> tuple[str, str]:
        return x.user, mine.get("(unset)")

    def inside() -> tuple[tuple[str, str], tuple[str, str], tuple[str, str]]:
        with x(user="ann"):
            only = capture()
            plain = wrap(seen)
            mine.set("kept here")
            mixed = capture()
            return only.run(seen), mixed.run(seen), wrap(seen)() + plain()

    only, mixed, both = contextvars.Context().run(inside)
    assert only == ("ann", "(unset)")
    assert mixed == ("ann", "(unset)")
    assert both == ("ann", "(unset)", "ann", "(unset)")


# -- thread context inheritance (Python 3.14's -X thread_inherit_context) -------------


class Value:
    """A bindable object that weak references can watch."""


def test_inherit_context_executor_worker_keeps_no_binding(xcurrent: xlocal) -> None:
    """A worker thread that a ContextExecutor's pool starts lazily inside a request's
    binding keeps nothing of it, whatever the setting: an unwrapped task on that
    worker sees nothing bound, and the value is freed while the worker lives."""
    value = Value()
    ref = weakref.ref(value)
    with ThreadPoolExecutor(1) as pool:
        executor = ContextExecutor(pool)
        with xcurrent(user=value):
            assert executor.submit(lambda: xcurrent.user).result(TIMEOUT) is value
        del value
        with xcurrent(user="bob"):
            assert executor.submit(lambda: xcurrent.user).result(TIMEOUT) == "bob"
            assert pool.submit(lambda: dir(xcurrent)).result(TIMEOUT) == []
        assert collected(ref)


def test_inherit_context_plain_pool_worker(xcurrent: xlocal) -> None:
    """A plain ThreadPoolExecutor whose worker started inside ann's binding runs a
    task submitted later inside bob's in the worker's own context: unbound, or ann's
    bindings where new threads inherit their creator's context (the README's
    Guarantees)."""
    with ThreadPoolExecutor(1) as pool:
        with xcurrent(user="ann"):
            pool.submit(lambda: None).result(TIMEOUT)
        with xcurrent(user="bob"):
            seen = pool.submit(lambda: getattr(xcurrent, "user", None)).result(TIMEOUT)
    assert seen == ("ann" if INHERITS else None)


def test_inherit_context_thread_starts_empty(xcurrent: xlocal) -> None:
    """An xlocal.Thread's run() has the bindings captured when it was made, and its
    thread keeps none of its creator's context whatever the setting: the captured
    value is freed when run() ends, while the thread object lives."""
    value = Value()
    ref = weakref.ref(value)
    seen: list[Any] = []
    with xcurrent(user=value):  # started inside: a plain thread would inherit it
        t = Thread(target=lambda: seen.append(xcurrent.user is ref()))
        t.start()
    del value
    t.join(TIMEOUT)
    assert seen == [True]
    assert collected(ref)


INHERIT_CONTEXT_TESTS = " or ".join(
    [
        "test_inherit_context_executor_worker_keeps_no_binding",
        "test_inherit_context_plain_pool_worker",
        "test_inherit_context_thread_starts_empty",
        "test_thread_releases_captured_bindings_when_done",
        "test_run_in_executor",
    ]
)


@pytest.mark.skipif(
    sys.version_info < (3, 14), reason="-X thread_inherit_context is new in 3.14"
)
@pytest.mark.parametrize("setting", ["0", "1"])
def test_inherit_context_under_each_setting(setting: str) -> None:
    """The thread-inheritance tests above pass with threads inheriting their
    creator's context and without, whatever this run's setting is."""
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            f"thread_inherit_context={setting}",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            __file__,
            "-k",
            INHERIT_CONTEXT_TESTS,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHON_THREAD_INHERIT_CONTEXT": setting},
        cwd=os.path.dirname(os.path.abspath(__file__)),  # the installed xlocal
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b5 passed", done.stdout), done.stdout
