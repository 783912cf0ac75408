"""Structured scopes: children carry the bindings, end with the block, report errors."""

# ruff: noqa: PT012 - the with-block of a scope, whole, is what raises the group

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Literal

import pytest

import xlocal as xl
from xlocal import ScopeClosedError, scope, xlocal
from xlocal.scopes import FutureScope

gevent = pytest.importorskip("gevent")
gevent_event = pytest.importorskip("gevent.event")

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

TIMEOUT = 30

Kind = Literal["thread", "greenlet"]
#: The two kinds of a plain `with` scope; asyncio tasks have tests of their own.
KINDS: list[Kind] = ["thread", "greenlet"]


def _event(kind: Kind) -> Any:
    """An event that the children of *kind* can wait on without blocking the others."""
    return gevent_event.Event() if kind == "greenlet" else threading.Event()


def _wait(event: Any) -> None:
    assert event.wait(TIMEOUT), "timed out: the event was never set"


@pytest.fixture
def no_new_threads() -> Iterator[None]:
    """The test leaves no thread behind, and the scope joined every one it made."""
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) <= before


# -- bindings -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_child_sees_bindings_of_its_spawn(
    xcurrent: xlocal, kind: Kind, no_new_threads: None
) -> None:
    """A child sees the bindings in force at its spawn call, not those made later."""
    with xcurrent(user="ann"), scope(kind=kind) as s:
        first = s.spawn(lambda: xcurrent.user)
        with xcurrent(user="bob"):
            second = s.spawn(lambda: xcurrent.user)
        third = s.spawn(lambda: xcurrent.user)
    assert (first.result(), second.result(), third.result()) == ("ann", "bob", "ann")


@pytest.mark.parametrize("kind", KINDS)
def test_children_bind_in_isolation(
    xcurrent: xlocal, kind: Kind, no_new_threads: None
) -> None:
    """Children that bind at once each read their own value, and none reaches the
    body: each runs in its own copy of the capture."""
    units = 8
    bound = [_event(kind) for _ in range(units)]
    go = _event(kind)

    def child(i: int) -> list[Any]:
        seen = [xcurrent.user]
        with xcurrent(user=i):
            bound[i].set()
            _wait(go)  # every child is inside its with-block now
            seen.append(xcurrent.user)
        seen.append(xcurrent.user)
        return seen

    with xcurrent(user="parent"), scope(kind=kind) as s:
        futures = [s.spawn(child, i) for i in range(units)]
        for event in bound:
            _wait(event)
        assert xcurrent.user == "parent"
        go.set()
    assert [f.result() for f in futures] == [
        ["parent", i, "parent"] for i in range(units)
    ]


def test_scope_current(xcurrent: xlocal, no_new_threads: None) -> None:
    """scope.current() is the innermost scope, in its body and in its children."""
    assert scope.current() is None
    with scope() as s:
        assert scope.current() is s
        inside = s.spawn(scope.current)
        with scope() as inner:
            assert scope.current() is inner
        assert scope.current() is s
    assert inside.result() is s
    assert scope.current() is None


# -- waiting --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_exit_waits_for_every_child(kind: Kind, no_new_threads: None) -> None:
    """Leaving the block waits until every child, grandchildren spawned into the
    scope while it waits included, has ended."""
    release = _event(kind)
    ended: list[int] = []

    def child(i: int, s: FutureScope) -> None:
        _wait(release)
        if i == 0:
            s.spawn(ended.append, 100)  # while the scope is already waiting
        ended.append(i)

    with scope(kind=kind) as s:
        futures = [s.spawn(child, i, s) for i in range(5)]
        release.set()
    assert sorted(ended) == [0, 1, 2, 3, 4, 100]
    assert all(f.done() for f in futures)


def test_no_thread_left_behind_after_errors(no_new_threads: None) -> None:
    """Failing children and a failing body still leave no thread running."""
    before = threading.active_count()
    with pytest.raises(ExceptionGroup), scope(limit=3) as s:
        for _ in range(10):
            s.spawn(_raise, ValueError("child"))
        raise KeyError("body")
    assert threading.active_count() == before


def test_greenlets_are_joined() -> None:
    """A scope of greenlets leaves no greenlet of its own running or scheduled."""
    made: list[Any] = []
    with scope(kind="greenlet") as s:
        for _ in range(20):
            s.spawn(lambda: made.append(gevent.getcurrent()))
    assert len(made) == 20
    assert all(g.dead for g in made)


# -- errors ---------------------------------------------------------------------------


def _raise(error: BaseException) -> None:
    raise error


@pytest.mark.parametrize("kind", KINDS)
def test_child_error_is_raised_as_group(kind: Kind) -> None:
    """One failing child makes an ExceptionGroup of its error; its future has it too."""
    error = ValueError("bad")
    one = r"^1 error in an xlocal\.scope"
    with pytest.raises(ExceptionGroup, match=one) as info, scope(kind=kind) as s:
        future = s.spawn(_raise, error)
    assert info.value.exceptions == (error,)
    assert future.exception() is error


@pytest.mark.parametrize("kind", KINDS)
def test_errors_in_order_body_first(kind: Kind) -> None:
    """The body's error comes first, then the children's in the order raised."""
    first, second, body = ValueError("first"), KeyError("second"), OSError("body")

    def later(s: FutureScope) -> None:
        _wait(s.cancel_event)  # the first child has failed
        raise second

    three = r"^3 errors in an xlocal\.scope"
    with pytest.raises(ExceptionGroup, match=three) as info, scope(kind=kind) as s:
        s.spawn(later, s)
        s.spawn(_raise, first)
        _wait(s.cancel_event)
        raise body
    assert info.value.exceptions == (body, first, second)


def test_base_exception_of_a_child_makes_a_base_group() -> None:
    """A child's SystemExit is not an Exception: the group is a BaseExceptionGroup."""
    with pytest.raises(BaseExceptionGroup) as info, scope() as s:
        s.spawn(_raise, SystemExit(3))
    assert not isinstance(info.value, ExceptionGroup)
    assert isinstance(info.value.exceptions[0], SystemExit)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupt_in_body_cancels_waits_and_is_raised_bare(
    interrupt: type[BaseException], no_new_threads: None
) -> None:
    """KeyboardInterrupt or SystemExit in the body cancels the children, waits for
    them, and is raised as it is (not in a group)."""
    saw: list[bool] = []

    def child(s: FutureScope) -> None:
        saw.append(s.cancel_event.wait(TIMEOUT))

    with pytest.raises(interrupt), scope() as s:
        s.spawn(child, s)
        raise interrupt
    assert saw == [True]


def test_interrupt_keeps_the_childrens_errors_as_context() -> None:
    """The children's errors under an interrupt of the body are not lost: they are
    the interrupt's __context__, as a group."""
    child_error = ValueError("child")
    with pytest.raises(KeyboardInterrupt) as info, scope() as s:
        s.spawn(_raise, child_error)
        _wait(s.cancel_event)
        raise KeyboardInterrupt
    context = info.value.__context__
    assert isinstance(context, ExceptionGroup)
    assert context.exceptions == (child_error,)


def test_nested_scope_error_is_one_error_of_the_outer() -> None:
    """An inner scope's group propagates out of a child as one error of the outer."""

    def child() -> None:
        def second(inner: FutureScope) -> None:
            _wait(inner.cancel_event)
            raise ValueError("b")

        with scope() as inner:
            inner.spawn(second, inner)
            inner.spawn(_raise, ValueError("a"))

    with pytest.raises(ExceptionGroup) as info, scope() as s:
        s.spawn(child)
    (group,) = info.value.exceptions
    assert isinstance(group, ExceptionGroup)
    assert [str(e) for e in group.exceptions] == ["a", "b"]


# -- cancellation ---------------------------------------------------------------------


def test_thread_children_see_the_flag(no_new_threads: None) -> None:
    """A failing child sets the flag that its siblings check, through the scope
    given to them or scope.current()."""

    def worker() -> int:
        units = 0
        current = scope.current()
        assert current is not None
        while not current.cancelled:
            units += 1
            current.cancel_event.wait(TIMEOUT)
        return units

    with pytest.raises(ExceptionGroup), scope() as s:
        workers = [s.spawn(worker) for _ in range(3)]
        assert not s.cancelled
        s.spawn(_raise, ValueError("stop"))
    assert s.cancelled
    assert [w.result() for w in workers] == [1, 1, 1]


def test_children_not_started_never_start(no_new_threads: None) -> None:
    """With limit=1, the children waiting behind a failing one are cancelled unrun."""
    ran: list[int] = []
    with pytest.raises(ExceptionGroup), scope(limit=1) as s:
        s.spawn(_raise, ValueError("first"))
        waiting = [s.spawn(ran.append, i) for i in range(10)]
    assert ran == []
    assert all(f.cancelled() for f in waiting)


def test_spawn_after_cancellation_returns_cancelled_future() -> None:
    """A body that goes on spawning after a child failed gets cancelled futures."""
    ran: list[int] = []
    with pytest.raises(ExceptionGroup), scope() as s:
        s.spawn(_raise, ValueError("first"))
        _wait(s.cancel_event)
        late = s.spawn(ran.append, 1)
    assert late.cancelled()
    assert ran == []


def test_greenlets_are_killed() -> None:
    """A failing greenlet child kills its running siblings with GreenletExit; their
    futures are cancelled and the group holds only the real error."""
    never = gevent_event.Event()
    started = gevent_event.Event()

    def blocked() -> None:
        started.set()
        never.wait()

    with pytest.raises(ExceptionGroup) as info, scope(kind="greenlet") as s:
        sibling = s.spawn(blocked)
        _wait(started)
        s.spawn(_raise, ValueError("stop"))
    assert [str(e) for e in info.value.exceptions] == ["stop"]
    with pytest.raises(concurrent.futures.CancelledError):
        sibling.result(0)


# -- limit ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "children"), [("thread", 2000), ("greenlet", 10_000)])
def test_limit_caps_concurrency(
    kind: Kind, children: int, no_new_threads: None
) -> None:
    """Through limit=N, never more than N children run at once (counted under a
    lock), and every child runs."""
    limit = 8
    lock = threading.Lock()
    running = peak = done = 0

    def child() -> None:
        nonlocal running, peak, done
        with lock:
            running += 1
            peak = max(peak, running)
        if kind == "greenlet":
            gevent.idle()  # let the others in while this one counts as running
        with lock:
            running -= 1
            done += 1

    with scope(limit=limit, kind=kind) as s:
        for _ in range(children):
            s.spawn(child)
    assert done == children
    assert 1 <= peak <= limit


def test_limit_starts_in_order(no_new_threads: None) -> None:
    """Children waiting for their turn start in the order they were spawned."""
    order: list[int] = []
    with scope(limit=1) as s:
        for i in range(50):
            s.spawn(order.append, i)
    assert order == list(range(50))


@pytest.mark.parametrize("limit", [0, -1, 1.5, "2"])
def test_bad_limit(limit: Any) -> None:
    """limit must be a positive int."""
    with pytest.raises(
        ValueError, match=r"^scope\(limit=\.\.\.\) takes a positive int"
    ):
        scope(limit=limit)


def test_bad_kind() -> None:
    """kind is 'thread' or 'greenlet'."""
    with pytest.raises(ValueError, match=r"^scope\(kind=\.\.\.\) is 'thread' or"):
        scope(kind="process")  # type: ignore[arg-type]


# -- asyncio --------------------------------------------------------------------------


def test_tasks_carry_bindings_and_are_awaited(xcurrent: xlocal) -> None:
    """In `async with`, each child is a Task in the bindings of its spawn, awaited by
    the end of the block; what it binds stays in it."""

    async def child(i: int, go: asyncio.Event) -> tuple[Any, ...]:
        before = xcurrent.user
        with xcurrent(user=i):
            await go.wait()
            return before, xcurrent.user

    async def main() -> list[Any]:
        go = asyncio.Event()
        with xcurrent(user="parent"):
            async with scope(limit=3) as s:
                tasks = [s.spawn(child, i, go) for i in range(6)]
                assert all(isinstance(t, asyncio.Task) for t in tasks)
                await asyncio.sleep(0)
                assert xcurrent.user == "parent"
                go.set()
            assert scope.current() is None
        return [t.result() for t in tasks]

    assert asyncio.run(main()) == [("parent", i) for i in range(6)]


def test_task_error_cancels_siblings() -> None:
    """A failing task cancels its running siblings and the ones waiting for the
    limit; the group holds the error alone."""

    async def main() -> tuple[Any, ...]:
        forever = asyncio.Event()
        try:
            async with scope(limit=2) as s:
                blocked = s.spawn(forever.wait)
                s.spawn(_araise, ValueError("stop"))
                queued = s.spawn(forever.wait)
        except ExceptionGroup as group:
            return group.exceptions, blocked.cancelled(), queued.cancelled()
        raise AssertionError("no group")

    errors, blocked, queued = asyncio.run(main())
    assert [str(e) for e in errors] == ["stop"]
    assert blocked
    assert queued


async def _araise(error: BaseException) -> None:
    raise error


def test_task_body_error_first_and_limit_counts() -> None:
    """The body's error comes before the tasks'; through limit=N at most N tasks run
    at once, over 10,000 of them."""
    peak = running = 0

    async def child() -> None:
        nonlocal peak, running
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1

    async def main() -> None:
        async with scope(limit=8) as s:
            for _ in range(10_000):
                s.spawn(child)
        async with scope() as s:
            s.spawn(_araise, KeyError("child"))
            await asyncio.sleep(0)
            raise OSError("body")

    with pytest.raises(ExceptionGroup) as info:
        asyncio.run(main())
    assert [type(e) for e in info.value.exceptions] == [OSError, KeyError]
    assert 1 <= peak <= 8


def test_cancelled_parent_cancels_tasks() -> None:
    """A task cancelled while its scope waits cancels the children, waits for them,
    and is cancelled (not a group)."""

    async def main() -> bool:
        forever = asyncio.Event()
        started = asyncio.Event()
        child_task: list[asyncio.Task[Any]] = []

        async def child() -> None:
            started.set()
            await forever.wait()

        async def parent() -> None:
            async with scope() as s:
                child_task.append(s.spawn(child))

        task = asyncio.ensure_future(parent())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return child_task[0].cancelled()

    assert asyncio.run(main())


def test_async_misuse_messages() -> None:
    """A coroutine instead of a function, a spawn from another thread, and a
    greenlet scope under `async with` are refused, saying what to do."""

    async def work() -> int:
        return 1

    async def main() -> None:
        async with scope() as s:
            coroutine = work()
            with pytest.raises(TypeError, match=r"^spawn\(\) takes a callable, not "):
                s.spawn(coroutine)  # type: ignore[arg-type]
            coroutine.close()
            caught: list[BaseException] = []

            def elsewhere() -> None:
                try:
                    s.spawn(work)
                except RuntimeError as error:
                    caught.append(error)

            thread = threading.Thread(target=elsewhere)
            thread.start()
            thread.join(TIMEOUT)
            assert "from outside its event loop" in str(caught[0])
        with pytest.raises(ValueError, match=r"^`async with` runs asyncio tasks"):
            async with scope(kind="greenlet"):
                pass

    asyncio.run(main())


# -- the hostile habit: trying to make a child outlive its scope ----------------------


def test_spawn_before_enter_and_after_end(xcurrent: xlocal) -> None:
    """spawn on a scope not yet entered, or ended, raises ScopeClosedError saying so."""
    s = scope()
    with pytest.raises(ScopeClosedError, match=r"^cannot spawn in .*not been entered"):
        s.spawn(print)
    with xcurrent(user="ann"), s:
        kept = s.spawn(lambda: xcurrent.user)
    assert kept.done()
    assert kept.result() == "ann"
    with pytest.raises(ScopeClosedError, match=r"^cannot spawn in .*it has ended"):
        s.spawn(print)
    assert isinstance(ScopeClosedError("x"), RuntimeError)


def test_enter_twice() -> None:
    """A scope is entered once, with or without async."""
    s = scope()
    twice = r"^cannot enter .* a scope is entered once"
    with s, pytest.raises(RuntimeError, match=twice):
        s.__enter__()

    async def again() -> None:
        async with s:
            pass

    with pytest.raises(
        RuntimeError, match=r"with `async with`: a scope is entered once"
    ):
        asyncio.run(again())


def test_thread_made_by_a_child_cannot_spawn_after_the_end(xcurrent: xlocal) -> None:
    """A child that hands its scope to a thread of its own (which carries the
    bindings, and so the scope) cannot use it to start work after the scope ended."""
    ended = threading.Event()
    seen: list[Any] = []

    def late(s: FutureScope) -> None:
        _wait(ended)
        seen.append(scope.current() is s)
        try:
            s.spawn(lambda: xcurrent.user)
        except ScopeClosedError as error:
            seen.append(str(error))

    def child(s: FutureScope) -> threading.Thread:
        thread = xl.Thread(target=late, args=(s,))
        thread.start()
        return thread

    with xcurrent(user="ann"), scope() as s:
        made = s.spawn(child, s)
    ended.set()
    made.result().join(TIMEOUT)
    assert seen[0] is True
    assert "it has ended, and a child must not outlive its scope" in seen[1]


class _Watched(scope):
    """A scope that says when it starts to exit, to order the test below."""

    __slots__ = ()
    exiting = threading.Event()

    def _closing(self, error: BaseException | None) -> None:
        super()._closing(error)
        self.exiting.set()


def unrelated_thread(**options: Any) -> threading.Thread:
    """A plain thread that starts with nothing bound, also where new threads inherit
    their creator's context (3.14's -X thread_inherit_context=1)."""
    if sys.version_info >= (3, 14):
        options["context"] = contextvars.Context()
    return threading.Thread(**options)


def test_spawn_from_a_stranger_while_exiting(xcurrent: xlocal) -> None:
    """While the scope waits for its children, only they may spawn into it: another
    thread that holds the scope gets ScopeClosedError, and sees no binding."""
    release = threading.Event()
    seen: list[Any] = []

    def stranger(s: scope) -> None:
        _wait(_Watched.exiting)
        try:
            s.spawn(print)
        except ScopeClosedError as error:
            seen.append(str(error))
        seen.append(getattr(xcurrent, "user", "unbound"))
        release.set()

    with xcurrent(user="ann"), _Watched() as s:
        outsider = unrelated_thread(target=stranger, args=(s,))
        outsider.start()
        s.spawn(_wait, release)
    outsider.join(TIMEOUT)
    assert "it is exiting, and a child must not outlive its scope" in seen[0]
    assert seen[1] == "unbound"


def test_thread_that_outlives_the_scope_cannot_use_it(xcurrent: xlocal) -> None:
    """A plain thread given the scope and its futures, running on after the block,
    sees no binding, and every spawn it tries fails clearly."""
    ended = threading.Event()
    seen: list[Any] = []

    def outlive(s: FutureScope, future: concurrent.futures.Future[Any]) -> None:
        _wait(ended)
        seen.append(future.result(0))
        seen.append(getattr(xcurrent, "user", "unbound"))
        try:
            s.spawn(lambda: xcurrent.user)
        except ScopeClosedError:
            seen.append("refused")

    with xcurrent(user="ann"), scope() as s:
        future = s.spawn(lambda: xcurrent.user)
        thread = unrelated_thread(target=outlive, args=(s, future))
        thread.start()
    ended.set()
    thread.join(TIMEOUT)
    assert seen == ["ann", "unbound", "refused"]


def test_repr() -> None:
    """The repr says the mode, the state and the limit."""
    s = scope(limit=2)
    assert repr(s) == "<xlocal.scope of threads, not entered, limit=2>"
    with s:
        assert repr(s) == "<xlocal.scope of threads, open, limit=2>"
    assert repr(s) == "<xlocal.scope of threads, ended, limit=2>"


def test_repr_of_tasks_and_cancelled() -> None:
    """An `async with` scope is one of tasks, whatever kind it was made with; a
    scope cancelled by a failing child says so."""

    async def fail() -> None:
        raise LookupError("child")

    async def main() -> list[str]:
        s = scope()
        seen = [repr(s)]
        with pytest.raises(BaseExceptionGroup):
            async with s:
                seen.append(repr(s))
                s.spawn(fail)
        return [*seen, repr(s)]

    assert asyncio.run(main()) == [
        "<xlocal.scope of threads, not entered>",
        "<xlocal.scope of tasks, open>",
        "<xlocal.scope of tasks, ended, cancelled>",
    ]


def test_exit_without_entry_or_twice_is_an_error() -> None:
    """A scope is exited once, by the block that entered it: an exit of a scope never
    entered, or a second one, is refused and changes nothing."""
    s = scope()
    with pytest.raises(
        RuntimeError,
        match=r"^cannot exit <xlocal.scope of threads, not entered>: a scope is exited "
        r"once, by the `with` block that entered it$",
    ):
        s.__exit__(None, None, None)
    assert scope.current() is None
    with s:
        pass
    with pytest.raises(RuntimeError, match=r"^cannot exit <xlocal.scope of threads, "):
        s.__exit__(None, None, None)

    async def main() -> None:
        async with scope() as t:
            pass
        with pytest.raises(RuntimeError, match=r"the `async with` block"):
            await t.__aexit__(None, None, None)

    asyncio.run(main())
    assert scope.current() is None


def test_task_ending_while_the_block_runs_is_recorded_quietly() -> None:
    """A task that ends before the block does is counted off by its done-callback
    without troubling the loop: nothing reaches the loop's exception handler."""

    async def main() -> list[Any]:
        reported: list[Any] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: reported.append(context))
        async with scope() as s:
            done = s.spawn(asyncio.sleep, 0, "early")
            assert await done == "early"
            await asyncio.sleep(0)  # its done-callback runs
        return reported

    assert asyncio.run(main()) == []


@pytest.mark.parametrize("limit", [None, 2])
def test_a_task_spawned_after_cancellation_is_cancelled(limit: int | None) -> None:
    """Once a child has failed, a task the block spawns is cancelled: with a limit
    too, where it is made another way."""

    async def fails() -> None:
        raise ValueError("child")

    async def main() -> asyncio.Task[Any]:
        with pytest.raises(ExceptionGroup) as raised:
            async with scope(limit=limit) as s:
                failed = s.spawn(fails)
                await asyncio.wait([failed])
                await asyncio.sleep(0)  # its done-callback has cancelled the scope
                late = s.spawn(asyncio.sleep, 0, "late")
        assert [str(e) for e in raised.value.exceptions] == ["child"]
        return late

    assert asyncio.run(main()).cancelled()


class _Result:
    """What a child returns: alive only while something holds the child's end."""


@pytest.mark.parametrize("kind", ["thread", "greenlet", "task"])
def test_an_ended_scope_keeps_nothing_of_its_children(kind: str) -> None:
    """A scope object kept after its block holds none of its children (their tasks,
    threads, futures, and so their results and contexts): no leftovers."""
    results: list[weakref.ref[_Result]] = []

    def child() -> _Result:
        result = _Result()
        results.append(weakref.ref(result))
        return result

    async def task_child() -> _Result:
        return child()

    if kind == "task":

        async def main() -> scope:
            async with scope() as s:
                for _ in range(3):
                    s.spawn(task_child)
            return s

        kept = asyncio.run(main())
    else:
        with scope(kind=kind) as kept:  # type: ignore[arg-type]
            for _ in range(3):
                kept.spawn(child)
    gc.collect()
    assert len(results) == 3
    assert [ref() for ref in results] == [None] * 3, kept


def test_exported() -> None:
    """scope and ScopeClosedError are public names of xlocal."""
    assert xl.scope is scope
    assert scope.__module__ == "xlocal"
    assert "scope" in xl.__all__
    assert "ScopeClosedError" in xl.__all__


# -- gevent's monkey patching, in a subprocess ----------------------------------------

_PATCHED = """
from gevent import monkey; monkey.patch_all()
import gc, threading, gevent, greenlet
import xlocal as xl
try:
    ExceptionGroup
except NameError:  # before 3.11
    from exceptiongroup import ExceptionGroup
x = xl.xlocal("x")
gate = threading.Event()
def child(i):
    assert isinstance(greenlet.getcurrent(), gevent.Greenlet) or i >= 0
    with x(i=i):
        gate.wait(30)
        return x.user, x.i
before = len(threading.enumerate())
with x(user="ann"):
    with xl.scope(limit=3) as s:
        futures = [s.spawn(child, i) for i in range(10)]
        gate.set()
assert [f.result() for f in futures] == [("ann", i) for i in range(10)]
try:
    with xl.scope() as s:
        s.spawn(lambda: 1 / 0)
except ExceptionGroup as group:
    assert isinstance(group.exceptions[0], ZeroDivisionError)
else:
    raise AssertionError("no group")
assert len(threading.enumerate()) == before
gc.collect()
live = [g for g in gc.get_objects() if isinstance(g, greenlet.greenlet) and g
        and g is not greenlet.getcurrent() and not isinstance(g, gevent.hub.Hub)]
assert not live, live
print("ok")
"""


def test_threads_under_gevent_patching_are_greenlets() -> None:
    """Under gevent's monkey patching a scope's threads are greenlets: they carry the
    bindings, keep what they bind, raise in a group and are all joined."""
    done = subprocess.run(
        [sys.executable, "-c", _PATCHED],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=os.path.dirname(os.path.abspath(__file__)),  # the installed xlocal
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ok"


def test_no_gevent_import_for_threads() -> None:
    """A scope of threads does not import gevent."""
    script = (
        "import sys, xlocal\n"
        "with xlocal.scope() as s: s.spawn(print, end='')\n"
        "print('gevent' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    assert done.stdout.strip() == "False"
