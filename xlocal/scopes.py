"""Structured scopes: children that run with the bindings and never outlive the block.

``with xlocal.scope() as s:`` (or ``async with``) starts children with ``s.spawn(fn,
...)``, each in a capture of the bindings in force at the spawn, as :func:`xlocal.wrap`
does.  Leaving the block waits for every child; if the body or a child raised, the
children not yet started never start, the running ones are cancelled (tasks and
greenlets) or told to stop (threads: ``s.cancelled``, ``s.cancel_event``), and every
error comes out together in one exception group.  So no thread, greenlet or task that a
scope made outlives it, and none can see the scope's bindings after it ended.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextvars
import sys
import threading
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Callable, Literal, NoReturn, Protocol, TypeVar

from .spawn import _INHERITS, capture

if sys.version_info < (3, 11):  # pragma: no cover - coverage is measured on 3.11+
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    # asyncio is imported at run time only by the methods of `async with`, so that
    # `import xlocal` does not import it (tests/test_local.py checks).
    import asyncio
    from types import TracebackType

    from typing_extensions import ParamSpec

    _P = ParamSpec("_P")

__all__ = ["FutureScope", "ScopeClosedError", "TaskScope", "scope"]

_R = TypeVar("_R")

#: The innermost scope of the running execution: its body, or one of its children.
_current: contextvars.ContextVar[scope | None] = contextvars.ContextVar(
    "xlocal.scope", default=None
)

#: Whether create_task takes context= (Python 3.11+).
_TASK_CONTEXT = sys.version_info >= (3, 11)

_NEW, _OPEN, _CLOSING, _CLOSED = "not entered", "open", "exiting", "ended"


class ScopeClosedError(RuntimeError):
    """``spawn`` was called on a scope that is not open.

    A scope takes children only between entering and leaving its block (and, while it
    waits at the end of the block, from its own children), so that none outlives it.

    .. versionadded:: 1.0
    """


class FutureScope(Protocol):
    """What ``with scope() as s`` gives: ``s.spawn`` returns a Future (for typing).

    .. versionadded:: 1.0
    """

    cancel_event: threading.Event

    @property
    def cancelled(self) -> bool: ...

    def spawn(
        self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_R]: ...


class TaskScope(Protocol):
    """What ``async with scope() as s`` gives: ``s.spawn`` returns a Task (for typing).

    .. versionadded:: 1.0
    """

    cancel_event: threading.Event

    @property
    def cancelled(self) -> bool: ...

    def spawn(
        self, fn: Callable[_P, Awaitable[_R]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> asyncio.Task[_R]: ...


class scope:  # noqa: N801 - used like a function: `with xlocal.scope() as s:`
    """A block whose children run with its bindings and end before it does.

    ``with scope() as s:`` starts each child of ``s.spawn(fn, *args, **kwargs)`` in a
    new thread (a greenlet where gevent or eventlet has patched threading), or, with
    ``kind="greenlet"``, in a gevent greenlet; ``async with scope() as s:`` starts each
    in an asyncio task.  *limit* runs at most that many children at once: the others
    wait their turn, in the order they were spawned.

    Leaving the block waits for every child.  If the body or a child raised, children
    not yet started never start, tasks are cancelled, greenlets are killed
    (``GreenletExit``), threads see ``cancelled`` become true, and the errors are
    raised together as an ``ExceptionGroup`` (a ``BaseExceptionGroup`` if one is not an
    ``Exception``): the body's first, then the children's in the order they were raised.
    A ``KeyboardInterrupt``, ``SystemExit`` or (async) ``CancelledError`` of the body
    is raised as it is, after the children have ended.

    .. versionadded:: 1.0
    """

    __slots__ = (
        "_cancelled",
        "_errors",
        "_handles",
        "_kind",
        "_limit",
        "_lock",
        "_loop",
        "_pending",
        "_running",
        "_semaphore",
        "_started",
        "_starting",
        "_state",
        "_token",
        "_unfinished",
        "_waiter",
        "cancel_event",
    )

    #: The token of the entry into ``current()``, set when the scope is entered.
    _token: contextvars.Token[scope | None]

    def __init__(
        self,
        *,
        limit: int | None = None,
        kind: Literal["thread", "greenlet"] = "thread",
    ) -> None:
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(
                f"scope(limit=...) takes a positive int or None, not {limit!r}"
            )
        if kind not in ("thread", "greenlet"):
            raise ValueError(f"scope(kind=...) is 'thread' or 'greenlet', not {kind!r}")
        self._limit = limit
        self._kind = kind
        self._state = _NEW
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []
        #: Set when the scope is cancelled: thread children check or wait on it (a
        #: gevent Event in a scope of greenlets, so that waiting lets others run).
        self.cancel_event: threading.Event = (
            _gevent().event.Event() if kind == "greenlet" else threading.Event()
        )
        #: The threads or greenlets (with their futures), or the tasks, made so far.
        self._handles: list[Any] = []
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._running = 0
        self._cancelled = False
        #: Tasks whose done-callback has not run yet, and what the exit awaits.
        self._unfinished = 0
        self._waiter: asyncio.Future[None] | None = None
        #: Children being started outside the lock, and the exit's wait for them.
        self._starting = 0
        self._started = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None

    #: Carried by capture() and so by every spawn helper, with the bindings: a child
    #: sees its scope (``current()``), and a capture in a scope stays on the fast path.
    __xlocal_carried__ = True

    @staticmethod
    def current() -> scope | None:
        """The innermost scope whose body or child is running here, or None.

        Spawn helpers carry it with the bindings: a thread that a child starts with
        ``xlocal.Thread`` sees the child's scope too (which it may use until the
        scope ends).
        """
        return _current.get()

    @property
    def cancelled(self) -> bool:
        """Whether the scope was cancelled (the body or a child raised).

        A thread child should check it between units of work and return when it is
        true, or wait on ``cancel_event`` instead of sleeping.
        """
        return self._cancelled

    def __repr__(self) -> str:
        mode = "task" if self._loop is not None else self._kind
        limit = "" if self._limit is None else f", limit={self._limit}"
        cancelled = ", cancelled" if self.cancelled else ""
        return f"<xlocal.scope of {mode}s, {self._state}{limit}{cancelled}>"

    # --- entering and leaving -------------------------------------------------------

    def _enter(self, how: str) -> None:
        if self._state is not _NEW:
            raise RuntimeError(
                f"cannot enter {self!r} with `{how}`: a scope is entered once; "
                f"make a new xlocal.scope() for each block"
            )
        self._state = _OPEN
        self._token = _current.set(self)

    def __enter__(self) -> FutureScope:
        self._enter("with")
        return self

    async def __aenter__(self) -> TaskScope:
        if self._kind != "thread":
            raise ValueError(
                f"`async with` runs asyncio tasks: drop kind={self._kind!r}, or enter "
                f"the scope with a plain `with`"
            )
        import asyncio  # noqa: PLC0415 - already imported: a loop is running

        loop = asyncio.get_running_loop()
        self._enter("async with")
        self._loop = loop
        if self._limit is not None:
            self._semaphore = asyncio.Semaphore(self._limit)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closing(error)
        self._join()
        self._finish(error)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        import asyncio  # noqa: PLC0415 - already imported: a loop is running

        self._closing(error)
        interrupted: BaseException | None = None
        loop = self._loop
        assert loop is not None
        while self._unfinished:
            # Resolved by the last task's done-callback, once every callback has run.
            self._waiter = loop.create_future()
            try:
                await self._waiter
            except asyncio.CancelledError as cancelled:
                # The task running the block is cancelled: cancel the children, and
                # keep waiting for them, then let the cancellation through.
                interrupted = interrupted or cancelled
                self._cancel()
        self._state = _CLOSED
        self._handles.clear()
        self._finish(interrupted or error)

    def _closing(self, error: BaseException | None) -> None:
        if self._state is not _OPEN:
            how = "async with" if self._loop is not None else "with"
            raise RuntimeError(
                f"cannot exit {self!r}: a scope is exited once, by the `{how}` block "
                f"that entered it"
            )
        _current.reset(self._token)
        with self._lock:
            self._state = _CLOSING
        if error is not None:
            self._cancel()

    def _finish(self, error: BaseException | None) -> None:
        with self._lock:
            self._state = _CLOSED
            errors, self._errors = self._errors, []
        if error is not None and (
            isinstance(error, (KeyboardInterrupt, SystemExit))
            or (self._loop is not None and _is_cancelled_error(error))
        ):
            if errors:
                error.__context__ = BaseExceptionGroup(_message(errors), errors)
            raise error
        if error is not None:
            errors.insert(0, error)
        if errors:
            raise BaseExceptionGroup(_message(errors), errors) from None

    # --- children -------------------------------------------------------------------

    def spawn(
        self, fn: Callable[_P, Any], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Any:
        """Start ``fn(*args, **kwargs)`` as a child, with the bindings in force here.

        In a ``with`` block it returns a ``concurrent.futures.Future`` of the result;
        in an ``async with`` block *fn* returns an awaitable (a coroutine function,
        most often), awaited in a new ``asyncio.Task``, which it returns; *fn* is
        called at once, or, with a limit, in the task when its turn comes.  What the
        child binds stays in the child.  Raises :class:`ScopeClosedError` when the
        scope is not open.  (Typed by :class:`FutureScope` and :class:`TaskScope`,
        what entering the scope returns.)
        """
        if not callable(fn):
            _refuse(fn)
        if self._state is not _OPEN:
            self._check_open()
        context = capture()._context
        loop = self._loop
        if loop is not None:
            import asyncio  # noqa: PLC0415 - already imported: a loop is running

            if asyncio._get_running_loop() is not loop:
                self._foreign()
            if self._semaphore is None and _TASK_CONTEXT:
                # The common case, inline: the capture is the task's own context (no
                # copy of it), and the task runs no frame of ours.
                if context.get(_current) is not self:
                    context.run(_current.set, self)
                awaitable = context.run(fn, *args, **kwargs)
                if not asyncio.iscoroutine(awaitable):
                    awaitable = _awaited(awaitable)
                task = loop.create_task(awaitable, context=context)  # type: ignore[call-arg,unused-ignore]
                self._handles.append(task)
                self._unfinished += 1
                task.add_done_callback(self._task_done)
                if self._cancelled:
                    task.cancel()
                return task
            return self._spawn_task(loop, context, fn, args, kwargs)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._check_open()
            if self._cancelled:
                future.cancel()
                future.set_running_or_notify_cancel()
                return future
            child = (future, context, fn, args, kwargs)
            if self._limit is not None and self._running >= self._limit:
                self._pending.append(child)
                return future
            self._running += 1
            self._starting += 1
        self._start(child)
        return future

    def _check_open(self) -> None:
        state = self._state
        if state is _OPEN or (state is _CLOSING and _current.get() is self):
            return
        if state is _NEW:
            raise ScopeClosedError(
                f"cannot spawn in {self!r}: it has not been entered. Spawn inside "
                f"`with xlocal.scope() as s:` (or `async with`)"
            )
        what = "is exiting" if state is _CLOSING else "has ended"
        raise ScopeClosedError(
            f"cannot spawn in {self!r}: it {what}, and a child must not outlive its "
            f"scope. Spawn inside the scope's block (or from one of its children), or "
            f"open a new scope"
        )

    def _start(self, child: tuple[Any, ...]) -> None:
        """Start a thread or greenlet for *child*, counted in ``_starting``.

        Not under the lock: ``Thread.start()`` waits for the new thread, which would
        wait for the lock in turn.  The exit waits until nothing is starting.
        """
        handle: Any = None
        try:
            if self._kind == "greenlet":
                handle = _gevent().Greenlet(self._run, child)
            else:
                options: dict[str, Any] = (
                    {"context": contextvars.Context()} if _INHERITS else {}
                )
                handle = threading.Thread(
                    target=self._run, args=(child,), daemon=True, **options
                )
            handle.start()
        except BaseException:
            handle = None
            with self._lock:
                self._running -= 1
            raise
        finally:
            with self._lock:
                if handle is not None:
                    self._handles.append((handle, child[0]))
                self._starting -= 1
                if not self._starting:
                    self._started.notify_all()

    def _run(self, child: tuple[Any, ...]) -> None:
        """Run one child in its thread or greenlet, then start the next in line."""
        future, context, fn, args, kwargs = child
        try:
            if self._cancelled:
                future.cancel()
            if not future.set_running_or_notify_cancel():
                return
            try:
                if context.get(_current) is self:  # spawned from the body, mostly
                    result = context.run(fn, *args, **kwargs)
                else:
                    result = context.run(self._call, fn, args, kwargs)
            except BaseException as error:
                if self._kind == "greenlet" and _is_greenlet_exit(error):
                    future.set_exception(concurrent.futures.CancelledError())
                else:
                    self._failed(error)
                    future.set_exception(error)
            else:
                future.set_result(result)
        finally:
            if self._limit is not None:  # without a limit, no one waits for a turn
                self._next()

    def _next(self) -> None:
        """One child under ``limit`` has ended: start the next in line."""
        following = None
        with self._lock:
            self._running -= 1
            if self._pending and not self._cancelled:
                self._running += 1
                self._starting += 1
                following = self._pending.popleft()
        if following is not None:
            self._start(following)

    def _call(self, fn: Callable[..., _R], args: Any, kwargs: Any) -> _R:
        _current.set(self)
        return fn(*args, **kwargs)

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)
        self._cancel()

    def _cancel(self) -> None:
        """Stop what has not started, and cancel what runs where the model allows."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            self.cancel_event.set()
            pending, self._pending = self._pending, collections.deque()
            handles = list(self._handles)
        for future, *_ in pending:
            future.cancel()
            future.set_running_or_notify_cancel()
        if self._loop is not None:
            for task in handles:
                task.cancel()
        elif self._kind == "greenlet":
            me = _gevent().getcurrent()
            for handle, future in handles:
                # A greenlet not yet running sees cancel_event when it starts.
                if handle is not me and future.running():
                    handle.kill(block=False)

    def _join(self) -> None:
        """Wait for every thread or greenlet of the scope to end, in the order made.

        Each stays in the list until it is joined, so that cancelling can reach it;
        children may add more (their own spawns, or the next in line) meanwhile.
        """
        joined = 0
        while True:
            with self._lock:
                while self._starting:  # never so for greenlets: starting one is instant
                    self._started.wait()
                if joined == len(self._handles):
                    # Ended in the same hold of the lock: nothing can spawn in between.
                    self._state = _CLOSED
                    self._handles.clear()
                    return
                handle, _ = self._handles[joined]
            handle.join()
            joined += 1

    # --- tasks ----------------------------------------------------------------------

    def _foreign(self) -> NoReturn:
        raise RuntimeError(
            f"cannot spawn in {self!r} from outside its event loop: call spawn "
            f"from the loop's thread (or use loop.call_soon_threadsafe)"
        )

    def _spawn_task(
        self,
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context,
        fn: Callable[..., Awaitable[Any]],
        args: Any,
        kwargs: Any,
    ) -> asyncio.Task[Any]:
        """Spawn a task with a limit, or before Python 3.11 (no ``context=``)."""
        if self._semaphore is None:
            task = context.run(self._new_task, loop, fn, args, kwargs)
        else:
            task = context.run(loop.create_task, self._limited(fn, args, kwargs))
        self._handles.append(task)
        self._unfinished += 1
        task.add_done_callback(self._task_done)
        if self._cancelled:
            task.cancel()
        return task

    def _new_task(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Awaitable[_R]],
        args: Any,
        kwargs: Any,
    ) -> asyncio.Task[_R]:
        """Call *fn* in the capture, as ``create_task(fn(*args))`` would, and make
        its task, which copies the capture."""
        import asyncio  # noqa: PLC0415 - already imported: a loop is running

        if _current.get() is not self:
            _current.set(self)
        awaitable = fn(*args, **kwargs)
        if not asyncio.iscoroutine(awaitable):
            awaitable = _awaited(awaitable)
        return loop.create_task(awaitable)

    async def _limited(
        self, fn: Callable[..., Awaitable[_R]], args: Any, kwargs: Any
    ) -> _R:
        """Wait for a turn under ``limit``, then call and await *fn*."""
        _current.set(self)
        assert self._semaphore is not None
        async with self._semaphore:
            return await fn(*args, **kwargs)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """Record a task's error (callbacks run in the order tasks end)."""
        self._unfinished -= 1
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                self._failed(error)
        waiter = self._waiter
        if not self._unfinished and waiter is not None and not waiter.done():
            waiter.set_result(None)


async def _awaited(awaitable: Awaitable[_R]) -> _R:
    return await awaitable


def _message(errors: list[BaseException]) -> str:
    return f"{len(errors)} error{'s' * (len(errors) > 1)} in an xlocal.scope"


def _gevent() -> Any:
    """gevent, imported only by scopes of greenlets."""
    try:
        import gevent  # noqa: PLC0415 - only when a scope of greenlets is used
        import gevent.event  # noqa: PLC0415
    except ImportError:
        raise RuntimeError(
            "xlocal.scope(kind='greenlet') runs gevent greenlets, and gevent is not "
            "installed: pip install gevent"
        ) from None
    return gevent


def _is_cancelled_error(error: BaseException) -> bool:
    import asyncio  # noqa: PLC0415 - already imported: a loop is running

    return isinstance(error, asyncio.CancelledError)


def _is_greenlet_exit(error: BaseException) -> bool:
    return type(error).__name__ == "GreenletExit"


def _refuse(fn: object) -> NoReturn:
    hint = (
        ": pass the function and its arguments, s.spawn(f, x), not s.spawn(f(x))"
        if isinstance(fn, Awaitable)
        else ""
    )
    raise TypeError(f"spawn() takes a callable, not {type(fn).__name__}{hint}")
