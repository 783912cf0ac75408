"""Faults: exceptions, kills, cancellations and late finalizers inside with-blocks.

After each fault the victim's bindings are gone, everyone else's are intact, and no
bound value is kept alive.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from conftest import collect, collected

import xlocal as xl
from xlocal import xlocal

eventlet = pytest.importorskip("eventlet")

TIMEOUT = 60


class Value:
    """A bindable object that weak references can watch."""


EXCEPTIONS: list[type[BaseException]] = [
    ValueError,
    KeyError,
    StopIteration,
    StopAsyncIteration,
    RecursionError,
    MemoryError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    asyncio.CancelledError,
]
if sys.version_info >= (3, 11):
    EXCEPTIONS.append(BaseExceptionGroup)  # noqa: F821 - builtin from 3.11


def make(exc_type: type[BaseException]) -> BaseException:
    if sys.version_info >= (3, 11) and exc_type is BaseExceptionGroup:  # noqa: F821
        return exc_type("group", [KeyboardInterrupt()])
    return exc_type("boom")


@pytest.mark.parametrize("exc_type", EXCEPTIONS, ids=lambda t: t.__name__)
def test_every_exception_kind_unwinds(
    xcurrent: xlocal, exc_type: type[BaseException]
) -> None:
    """Any exception leaving nested blocks restores the outer bindings and keeps
    nothing."""
    value = Value()
    ref = weakref.ref(value)
    with xcurrent(outer=1):
        with pytest.raises(exc_type), xcurrent(v=value), xcurrent(w=value):
            raise make(exc_type)
        assert dir(xcurrent) == ["outer"]
    del value
    assert collected(ref)


@pytest.mark.parametrize("exc_type", EXCEPTIONS, ids=lambda t: t.__name__)
def test_every_exception_kind_through_wrap(
    xcurrent: xlocal, exc_type: type[BaseException]
) -> None:
    """Any exception leaving a wrapped call reaches the caller and leaks nothing."""

    def work() -> None:
        with xcurrent(inside=1):
            raise make(exc_type)

    with xcurrent(outer=1):
        wrapped = xl.wrap(work)
    with pytest.raises(exc_type):
        wrapped()
    assert dir(xcurrent) == []


def test_task_cancelled_inside_wrap(xcurrent: xlocal) -> None:
    """A task cancelled inside a wrapped coroutine unwinds there and keeps nothing."""
    refs: list[weakref.ref[Value]] = []
    exited: list[Any] = []

    async def work(inside: asyncio.Event) -> None:
        value = Value()
        refs.append(weakref.ref(value))
        with xcurrent(v=value):
            del value
            try:
                inside.set()
                await asyncio.Event().wait()
            finally:
                exited.append(dir(xcurrent))

    async def main() -> None:
        inside = asyncio.Event()
        with xcurrent(request="captured"):
            wrapped = xl.wrap(work)
        with xcurrent(mine="runner"):
            task = asyncio.create_task(wrapped(inside))
            await asyncio.wait_for(inside.wait(), TIMEOUT)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert dir(xcurrent) == ["mine"]

    asyncio.run(main())
    assert exited == [["request", "v"]]
    assert collected(refs[0])


def test_eventlet_killed_inside_a_block(xcurrent: xlocal) -> None:
    """Killing an eventlet green thread waiting inside a with-block keeps nothing."""
    refs: list[weakref.ref[Value]] = []
    inside = eventlet.Event()

    def unit() -> None:
        value = Value()
        refs.append(weakref.ref(value))
        with xcurrent(v=value):
            del value
            inside.send(True)
            eventlet.Event().wait()

    with xcurrent(mine="runner"):
        job = eventlet.spawn(unit)
        with eventlet.Timeout(TIMEOUT):
            inside.wait()
        job.kill()
        assert job.dead
        assert xcurrent.mine == "runner"
    del job
    assert collected(refs[0])


def suspended_generator(xcurrent: xlocal) -> tuple[Iterator[None], weakref.ref[Value]]:
    """A generator suspended inside its own with-block, and a ref to its value."""
    value = Value()
    ref = weakref.ref(value)

    def gen(v: Value) -> Iterator[None]:
        with xcurrent(v=v):
            yield
            yield

    g = gen(value)
    return g, ref


def test_generator_closed_late_in_another_thread(xcurrent: xlocal) -> None:
    """A generator that leaked its binding into one thread and is closed in another
    fails there without touching anything; the first thread keeps the leak until it
    ends and its Thread object goes (on 3.14+ a threading.Thread keeps the context
    its run() ran in), and then nothing is retained."""
    handoff: list[Iterator[None]] = []
    refs: list[weakref.ref[Value]] = []
    started, leaked_seen = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        g, ref = suspended_generator(xcurrent)
        refs.append(ref)
        next(g)  # the generator's binding is now in force in this thread
        assert dir(xcurrent) == ["v"]
        leaked_seen.set()
        handoff.append(g)
        del g

    def second() -> None:
        with xcurrent(mine="second"):
            started.set()
            try:
                handoff[0].close()
            except RuntimeError as e:
                errors.append(e)
            assert dir(xcurrent) == ["mine"]

    t1 = threading.Thread(target=first)
    t1.start()
    t1.join(TIMEOUT)
    assert leaked_seen.is_set()
    t2 = threading.Thread(target=second)
    t2.start()
    t2.join(TIMEOUT)
    assert started.is_set()
    assert "it is not active in this execution" in str(errors[0])
    handoff.clear()
    errors.clear()  # its traceback holds the generator's frame, and so the value
    del t1
    assert collected(refs[0])


def test_generator_leaked_in_an_xlocal_thread_goes_with_the_run(
    xcurrent: xlocal,
) -> None:
    """A generator that leaked its binding into an xlocal.Thread's run() and is
    closed in another thread leaves nothing behind once run() has ended, while the
    thread object lives: run() runs in a copy of the captured bindings, and the
    thread's own context is empty on every version."""
    handoff: list[Iterator[None]] = []
    refs: list[weakref.ref[Value]] = []

    def first() -> None:
        g, ref = suspended_generator(xcurrent)
        refs.append(ref)
        next(g)
        assert dir(xcurrent) == ["v"]
        handoff.append(g)

    t1 = xl.Thread(target=first)
    t1.start()
    t1.join(TIMEOUT)
    with pytest.raises(RuntimeError, match="it is not active in this execution"):
        handoff.pop().close()
    assert collected(refs[0])
    assert not t1.is_alive()


def test_generator_collected_late_elsewhere(
    xcurrent: xlocal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leaking generator finalized in another execution reports the bad exit as
    unraisable and changes nothing there."""
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    g, ref = suspended_generator(xcurrent)
    holder = [g]
    del g

    async def advance() -> None:
        next(holder[0])  # leaks into this task's context only

    async def main() -> None:
        await asyncio.create_task(advance())
        assert dir(xcurrent) == []

    asyncio.run(main())
    with xcurrent(mine="collector"):
        holder.clear()
        collect()  # finalizes the generator here on PyPy too
        assert dir(xcurrent) == ["mine"]
    assert len(unraisable) == 1
    assert isinstance(unraisable[0].exc_value, RuntimeError)
    assert "not active in this execution" in str(unraisable[0].exc_value)
    unraisable.clear()
    assert collected(ref)


def test_isolated_generator_collected_elsewhere(xcurrent: xlocal) -> None:
    """An isolated generator finalized in another thread exits its block in its own
    context, leaving that thread's bindings alone."""
    value = Value()
    ref = weakref.ref(value)
    exited: list[Any] = []

    @xl.isolated
    def gen(v: Value) -> Iterator[None]:
        with xcurrent(v=v):
            try:
                yield
            finally:
                exited.append(dir(xcurrent))

    holder = [gen(value)]
    del value
    next(holder[0])
    assert dir(xcurrent) == []

    def drop() -> None:
        with xcurrent(mine="collector"):
            holder.clear()
            collect()  # finalizes the generator here on PyPy too
            assert dir(xcurrent) == ["mine"]

    t = threading.Thread(target=drop)
    t.start()
    t.join(TIMEOUT)
    assert exited == [["v"]]
    assert collected(ref)


def test_exit_raising_keeps_other_executions_intact(xcurrent: xlocal) -> None:
    """A thread that misuses exits leaves the bindings of concurrent threads alone."""
    n = 8
    barrier = threading.Barrier(n, timeout=TIMEOUT)
    shared = xcurrent(shared=1)
    seen: list[Any] = []

    def victim() -> None:
        with xcurrent(id="victim"):
            barrier.wait()
            for _ in range(3):
                with pytest.raises(RuntimeError):
                    shared.__exit__(None, None, None)
            barrier.wait()
            seen.append(xcurrent.id)

    def bystander(i: int) -> None:
        with xcurrent(id=i), shared:
            barrier.wait()
            barrier.wait()
            seen.append((xcurrent.id, xcurrent.shared))

    threads = [threading.Thread(target=victim)] + [
        threading.Thread(target=bystander, args=(i,)) for i in range(n - 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert sorted(map(str, seen)) == sorted(
        ["victim"] + [str((i, 1)) for i in range(n - 1)]
    )


# -- foreign exits of a shared binding object ------------------------------------------


class _Pause:
    """An awaitable that suspends a coroutine once, so tests can step it by hand."""

    def __await__(self) -> Iterator[None]:
        yield


def test_abandoned_decorated_coroutine_finalized_in_another_execution(
    xcurrent: xlocal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coroutine of a binding-decorated function, abandoned inside its binding and
    finalized while another call of the same function is inside it, leaves that other
    call's binding alone."""
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    @xcurrent(role="admin")
    async def handler() -> str:
        await _Pause()
        return str(xcurrent.role)

    mine, theirs = contextvars.Context(), contextvars.Context()
    abandoned = handler()
    mine.run(abandoned.send, None)  # entered in its own context, then suspended
    innocent = handler()
    theirs.run(innocent.send, None)

    def collect_here() -> str:
        nonlocal abandoned
        del abandoned  # finalized here: its exit runs in the innocent's context
        gc.collect()  # where garbage is not freed at once (PyPy)
        return str(xcurrent.role)

    assert theirs.run(collect_here) == "admin"
    with pytest.raises(StopIteration) as done:
        theirs.run(innocent.send, None)
    assert done.value.value == "admin"
    assert theirs.run(dir, xcurrent) == []
    if sys.implementation.name == "cpython":  # PyPy finalizes on its own schedule
        assert len(unraisable) == 1
        assert "not active in this execution" in str(unraisable[0].exc_value)
    unraisable.clear()


def test_kept_binding_generator_collected_in_another_thread(
    xcurrent: xlocal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generator abandoned inside a kept binding and collected in a thread that is
    inside the same binding object does not end that thread's entry."""
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    admin = xcurrent(role="admin")

    def gen() -> Iterator[None]:
        with admin:
            yield
            yield

    holder = [gen()]
    seen: list[Any] = []

    def first() -> None:
        next(holder[0])  # the generator's entry is in this thread, left open

    def second() -> None:
        with admin:
            holder.clear()  # the generator is finalized here
            gc.collect()  # where garbage is not freed at once (PyPy)
            seen.append(getattr(xcurrent, "role", None))
        seen.append(dir(xcurrent))

    for target in (first, second):
        t = threading.Thread(target=target)
        t.start()
        t.join(TIMEOUT)
    assert seen == ["admin", []]
    if sys.implementation.name == "cpython":  # PyPy finalizes on its own schedule
        assert len(unraisable) == 1
        assert "not active in this execution" in str(unraisable[0].exc_value)
    unraisable.clear()


def test_shared_binding_in_two_tasks_one_closed_in_the_other(xcurrent: xlocal) -> None:
    """Two tasks inside one binding object: one task's coroutine closed inside the
    other (as a finalizer would) fails there and leaves the other's binding alone."""
    admin = xcurrent(role="admin")

    async def main() -> list[Any]:
        entered, gate = asyncio.Event(), asyncio.Event()
        results: list[Any] = []

        async def victim() -> None:
            async with admin:
                entered.set()
                await gate.wait()

        task = asyncio.create_task(victim())
        async with admin:
            await asyncio.wait_for(entered.wait(), TIMEOUT)
            try:
                task.get_coro().close()  # the victim's exit runs in this task
            except RuntimeError as error:
                results.append(str(error))
            results.append(xcurrent.role)
        results.append(dir(xcurrent))
        task.cancel()
        with pytest.raises((asyncio.CancelledError, RuntimeError)):
            await task  # its coroutine is closed: the task ends either way
        return results

    results = asyncio.run(main())
    assert "not active in this execution" in results[0]
    assert results[1:] == ["admin", []]


def test_hand_written_exit_in_another_thread(xcurrent: xlocal) -> None:
    """A context manager that exits a shared binding by hand, called in a thread that
    is inside the same binding, cannot end that thread's own entry."""
    admin = xcurrent(role="admin")

    class Admin:
        def __enter__(self) -> None:
            admin.__enter__()

        def __exit__(self, *exc: object) -> None:
            admin.__exit__(None, None, None)

    manager = Admin()
    seen: list[Any] = []

    def other() -> None:
        with admin:
            try:
                manager.__exit__(None, None, None)  # meant for the main thread
            except RuntimeError as error:
                seen.append(str(error))
            seen.append(xcurrent.role)
        seen.append(dir(xcurrent))

    with manager:
        t = threading.Thread(target=contextvars.Context().run, args=(other,))
        t.start()
        t.join(TIMEOUT)
        assert xcurrent.role == "admin"
    assert dir(xcurrent) == []
    assert seen[0].startswith(
        "cannot exit <Binding xcurrent(role=...)>: it is not active in this execution"
    )
    assert seen[1:] == ["admin", []]


def test_exit_stack_exits_its_entry_beside_one_held_in_another_context(
    xcurrent: xlocal,
) -> None:
    """An ExitStack ends its own entry of a binding while another context holds an
    entry of the same binding made by a frame that is done too."""
    admin = xcurrent(role="admin")
    other = contextvars.copy_context()
    held = ExitStack()
    other.run(held.enter_context, admin)
    try:
        with ExitStack() as stack:
            stack.enter_context(admin)
            assert xcurrent.role == "admin"
        assert dir(xcurrent) == []
        assert other.run(getattr, xcurrent, "role") == "admin"
    finally:
        other.run(held.close)
    assert other.run(dir, xcurrent) == []


def test_exit_through_a_helper_ends_the_innermost_entry(xcurrent: xlocal) -> None:
    """__exit__ called by a helper of a running frame that entered a binding twice
    ends the innermost of the two entries, then the outer one."""
    admin = xcurrent(role="admin")

    def leave() -> None:
        admin.__exit__(None, None, None)

    admin.__enter__()
    with xcurrent(user="ann"):
        admin.__enter__()
        leave()
        assert (xcurrent.role, xcurrent.user) == ("admin", "ann")
    assert xcurrent.role == "admin"
    leave()
    assert dir(xcurrent) == []


def test_async_with_keeps_nothing_of_its_coroutine(xcurrent: xlocal) -> None:
    """A binding kept after its async with-block ended keeps nothing alive of the
    coroutine that entered it."""
    admin = xcurrent(role="admin")

    async def handle() -> weakref.ref[Value]:
        value = Value()
        async with admin:
            assert xcurrent.role == "admin"
        return weakref.ref(value)

    ref = asyncio.run(handle())
    assert collected(ref)
    assert dir(xcurrent) == []


def test_entries_a_frame_made_in_two_contexts_exit_in_any_order(
    xcurrent: xlocal,
) -> None:
    """Entries of one binding that a finished frame made here, in a context it ran,
    and here again, each exit by hand in their own execution, newest or oldest first,
    and then keep nothing of that frame alive."""
    admin = xcurrent(role="admin")
    other = contextvars.copy_context()

    def enter_three() -> weakref.ref[Value]:
        value = Value()
        admin.__enter__()
        other.run(admin.__enter__)
        admin.__enter__()
        return weakref.ref(value)

    def leave() -> None:
        admin.__exit__(None, None, None)

    ref = enter_three()
    leave()  # the newest entry
    assert xcurrent.role == "admin"
    leave()  # the oldest entry, under the one in the other context
    assert dir(xcurrent) == []
    assert other.run(getattr, xcurrent, "role") == "admin"
    other.run(leave)
    assert other.run(dir, xcurrent) == []
    assert collected(ref)
