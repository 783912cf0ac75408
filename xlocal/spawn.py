"""Carry bindings across execution boundaries: snapshots, wrap, threads, executors.

A new thread or greenlet starts with nothing bound.  To let work spawned there see the
bindings of the code that spawned it, capture them (``capture()``: the bindings of all
xlocal objects at once, and nothing else of the spawner's context) and run the work in
the capture (``wrap(func)``).  Every run uses its own copy of the capture, so runs may
overlap, in any thread, greenlet or task, and what one run binds never reaches another
or the spawner.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import importlib
import pickle
import sys
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, TypeVar, cast

from ._core import xlocal
from ._environment import IMPLEMENTATION
from ._frames import _EMPTY, _ENTRY, _carried, _names, _var
from ._steps import in_context, lazy, steps_in

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    from .portable import Carried

    _P = ParamSpec("_P")

__all__ = ["ContextExecutor", "Snapshot", "Thread", "capture", "isolated", "wrap"]

_R = TypeVar("_R")
_F = TypeVar("_F", bound=Callable[..., Any])


class Snapshot:
    """The bindings of every xlocal at one moment, to run code with later.

    Made by :func:`capture`.  It never changes: bindings made or ended after the
    capture, or during a run in it, do not affect it.

    .. versionadded:: 1.0
    """

    __slots__ = ("_context",)

    def __init__(self, context: contextvars.Context) -> None:
        self._context = context

    def run(self, func: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Call *func* with the captured bindings, and return its result.

        The call runs in a fresh copy of the capture, so it may overlap other runs, and
        nothing it binds outlives it.
        """
        return self._context.copy().run(func, *args, **kwargs)

    def wrap(self, func: _F) -> _F:
        """Return *func* made to run with the captured bindings at every call.

        A generator, coroutine or async generator made by calling the result runs each
        of its steps with the captured bindings, whoever resumes it.
        """
        return in_context(func, self._context.copy)

    def bindings(self, target: xlocal) -> Mapping[str, Any]:
        """The names bound on *target* in this snapshot, as a read-only mapping."""
        if not isinstance(target, xlocal):
            raise TypeError(
                f"Snapshot.bindings() takes an xlocal, not {type(target).__name__}"
            )
        frame = self._context.get(_var(target), _EMPTY)
        return MappingProxyType(_names(frame))

    def __repr__(self) -> str:
        bound = [
            f"{var.name}({', '.join(sorted(_names(frame)))})"
            for var, frame in self._context.items()
            if isinstance(frame, dict) and _ENTRY in frame
        ]
        return f"<Snapshot {', '.join(sorted(bound)) or '(nothing bound)'}>"


def capture() -> Snapshot:
    """Capture the bindings of every xlocal in the current execution.

    It holds xlocal's own state and nothing else: the bindings of every xlocal, and the
    data of the werkzeug-compatible ``Local`` and ``LocalStack`` objects, all of which
    are never changed in place, so that the executions that run in the snapshot share
    nothing they could change under each other.  Other context variables, such as
    ``decimal``'s context or a ContextVar of the program's own, are not carried: code
    run in a snapshot sees them as a new thread would.

    .. versionadded:: 1.0
    """
    return Snapshot(_own_state())


def _own_state() -> contextvars.Context:
    """A new Context holding xlocal's own variables from the current one."""
    own = [
        (var, value)
        for var, value in contextvars.copy_context().items()
        if _carried(value)
    ]
    context = contextvars.Context()
    context.run(_set_all, own)
    return context


def _set_all(pairs: list[tuple[contextvars.ContextVar[Any], Any]]) -> None:
    for var, value in pairs:
        var.set(value)


def wrap(func: _F) -> _F:
    """Return *func* made to run with the bindings in force now, at every call.

    Use it to hand work to another thread, greenlet or task::

        gevent.spawn(xlocal.wrap(handler), request)

    Each call runs in its own copy of the bindings, so the result may be called many
    times, at once, from anywhere; what a call binds never escapes it.  Coroutine
    functions, generator functions and async generator functions keep every step of
    what they return in those bindings.  ``functools.wraps`` metadata is kept.

    .. versionadded:: 1.0
    """
    _check_callable(func, "wrap")
    return capture().wrap(func)


if IMPLEMENTATION == "c":
    # The compiled capture() and wrap() (xlocal/_cxlocal.c): the same as the functions
    # above, which they call for every case outside their fast path.
    _compiled = importlib.import_module("xlocal._cxlocal")
    capture = _compiled.capturer(capture, Snapshot, _carried, _ENTRY)
    wrap = _compiled.wrapper(wrap, capture, lazy, steps_in)


def isolated(func: _F) -> _F:
    """Make each call of *func* run in a copy of the bindings in force at that call.

    Meant for generator and async generator functions: the generator runs every step
    with the bindings its creator had when it called *func*, and a with-block inside it
    stays inside it, instead of leaking to its consumer between steps::

        @isolated
        def rows():
            with xcurrent(phase="read"):
                yield from read_rows()     # the consumer never sees phase

    .. versionadded:: 1.0
    """
    _check_callable(func, "isolated")
    return in_context(func, contextvars.copy_context)


#: Whether threading.Thread takes ``context=`` (Python 3.14+), and so may inherit the
#: context of the code that makes the thread (``-X thread_inherit_context``).
_INHERITS = sys.version_info >= (3, 14)


class Thread(threading.Thread):
    """A ``threading.Thread`` whose ``run()`` has the bindings of the code that made it.

    A drop-in for ``threading.Thread``: the same arguments, and subclasses that override
    ``run()`` get the bindings too.  The bindings are captured when the thread object is
    made, not when it starts, and let go of as soon as ``run()`` starts: a thread that
    never starts holds them only as long as the thread object lives.

    On Python 3.14+ the thread's own context is a new, empty one unless ``context=``
    is given, whatever ``sys.flags.thread_inherit_context`` says: a thread that
    inherited its creator's context would keep the creator's bindings alive as long
    as the thread object lives.  ``run()`` runs in the captured bindings either way.

    .. versionadded:: 1.0
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _INHERITS and "context" not in kwargs:
            kwargs["context"] = contextvars.Context()
        super().__init__(*args, **kwargs)
        self._xlocal_snapshot: Snapshot | None = capture()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            cls.run = _in_snapshot(cls.__dict__["run"])  # type: ignore[method-assign,assignment]

    def run(self) -> None:
        super().run()


def _in_snapshot(run: Callable[[Thread], None]) -> Callable[[Thread], None]:
    """Make a Thread's ``run`` run in the thread's snapshot, taken from it once."""

    @functools.wraps(run)
    def run_in_snapshot(self: Thread) -> None:
        # The outermost run() of the class chain takes the snapshot; a run() it calls
        # through super() finds none and runs in the context it is already in.  The
        # thread object keeps no reference to it, and so no cycle through itself.
        snapshot = self.__dict__.pop("_xlocal_snapshot", None)
        if snapshot is None:
            run(self)
        else:
            snapshot.run(run, self)

    return run_in_snapshot


Thread.run = _in_snapshot(Thread.run)  # type: ignore[method-assign,assignment]


class ContextExecutor(concurrent.futures.Executor):
    """An executor whose tasks run with the bindings of the code that submitted them.

    Wraps any ``concurrent.futures.Executor``: a thread pool, gevent's thread pool, or
    a process pool::

        executor = ContextExecutor(ThreadPoolExecutor(max_workers=4))
        with xcurrent(request=req):
            future = executor.submit(handler)     # handler sees xcurrent.request

    ``submit``, ``map`` and ``loop.run_in_executor(executor, ...)`` all carry bindings.
    Shutting it down shuts down the wrapped executor.

    The wrapped executor's ``submit`` runs in an empty context, so that a worker
    thread or process it starts there holds no bindings, whatever
    ``sys.flags.thread_inherit_context`` (Python 3.14+) says: a worker started
    lazily inside one request's binding would otherwise keep that request's values
    alive for as long as it lives.

    Around a ``ProcessPoolExecutor`` the task gets the submitter's *portable*
    bindings only (see :mod:`xlocal.portable`), encoded at ``submit``: an unencodable
    value, or a function or argument that cannot be pickled, raises there.  The
    worker runs it in a fresh, empty context with those bindings entered around it.

    .. versionadded:: 1.0
    """

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        if not isinstance(executor, concurrent.futures.Executor):
            raise TypeError(
                f"ContextExecutor wraps a concurrent.futures.Executor, not "
                f"{type(executor).__name__}"
            )
        self._executor = executor

    def submit(
        self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_R]:
        # In a new, empty context: a worker that submit starts inherits nothing.
        start = contextvars.Context().run
        submit: Callable[..., concurrent.futures.Future[Any]] = self._executor.submit
        if _is_process_pool(self._executor):
            task = _pickled(self._executor, fn, args, kwargs)
            future = start(submit, _run_pickled, task)
        else:
            future = start(submit, capture().run, fn, *args, **kwargs)
        return cast("concurrent.futures.Future[_R]", future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            self._executor.shutdown(wait=wait, cancel_futures=True)
        else:
            self._executor.shutdown(wait=wait)

    def __repr__(self) -> str:
        return f"<ContextExecutor of {self._executor!r}>"


def _is_process_pool(executor: concurrent.futures.Executor) -> bool:
    # Without importing concurrent.futures.process (and multiprocessing) for others.
    process = sys.modules.get("concurrent.futures.process")
    return process is not None and isinstance(executor, process.ProcessPoolExecutor)


def _pickled(
    executor: concurrent.futures.Executor,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> bytes:
    """The task for a process pool, carried and pickled here, so that errors are."""
    if not callable(fn):
        raise TypeError(f"submit() takes a callable, not {type(fn).__name__}")
    # Imported here, so that `import xlocal` needs neither json nor multiprocessing.
    from multiprocessing.reduction import ForkingPickler  # noqa: PLC0415

    from .portable import carry  # noqa: PLC0415

    carried = carry(fn)
    try:
        return bytes(ForkingPickler.dumps((carried, args, kwargs)))
    except Exception as error:
        raise TypeError(
            f"cannot submit {fn!r} to {type(executor).__name__}: a process pool "
            f"pickles the function and its arguments, and pickling failed ({error}). "
            f"Submit a function defined at module level (not a lambda or a local "
            f"function), with arguments that can be pickled"
        ) from error


def _run_pickled(task: bytes) -> _Returned:  # pragma: no cover - in worker processes
    """Run a task that :func:`_pickled` made, in a process pool's worker.

    Tested with real pools in tests/test_portable_processes.py, where coverage does
    not measure.
    """
    try:
        carried, args, kwargs = pickle.loads(task)
    except Exception as error:
        raise RuntimeError(
            f"cannot run the task in the worker process: unpickling it failed "
            f"({type(error).__name__}: {error}). Under the spawn and forkserver start "
            f"methods the worker imports the modules that define the function and "
            f"its xlocals: define them in an importable module, not in __main__ of "
            f"an interactive session"
        ) from None
    from .portable import Carried  # noqa: PLC0415

    assert isinstance(carried, Carried)
    return _Returned(carried(*args, **kwargs), carried)


class _Returned:
    """A process-pool task's result, pickled in the worker, or an error saying why not.

    The pool sends it back, and the submitter gets the value itself.  A value that
    cannot be pickled is an error of the task, raised here, naming it: not the
    pool's bare pickling traceback (to which Python 3.14+ adds notes naming the
    pool's own structures).
    """

    __slots__ = ("_data",)

    def __init__(self, value: Any, task: Carried) -> None:  # pragma: no cover
        from multiprocessing.reduction import ForkingPickler  # noqa: PLC0415

        try:
            self._data = bytes(ForkingPickler.dumps(value))
        except Exception as error:
            raise TypeError(
                f"cannot send the result of {task._func!r} back from the "
                f"worker process: it returned a {type(value).__name__}, and "
                f"pickling it failed ({error}). Return values that can be pickled"
            ) from None

    def __reduce__(self) -> tuple[Any, ...]:  # pragma: no cover - in worker processes
        return pickle.loads, (self._data,)


def _check_callable(func: object, helper: str) -> None:
    if not callable(func):
        raise TypeError(f"{helper}() takes a callable, not {type(func).__name__}")
