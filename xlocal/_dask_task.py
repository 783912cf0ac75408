"""A function and its submitter's portable bindings, as Dask runs it on a worker.

Apart from :mod:`xlocal.dask`, so that ``xlocal.dask.Client`` (in ``_dask_client``,
which imports distributed) and the rest of ``xlocal.dask`` both build on it without
importing each other.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Callable

from ._engines import hidden
from ._steps import ASYNC_GENERATOR, COROUTINE, GENERATOR, ContextGenerator, kind
from .portable import (
    CARRIER_KEY,
    SIGNATURE_KEY,
    CarrierError,
    Extracted,
    Key,
    extract,
    inject,
)

__all__ = [
    "KEY_VARIABLE",
    "OLD_KEYS_VARIABLE",
    "Carried",
    "carried",
    "check_key",
    "runnable",
]

#: The environment variable that holds a process's signing key, as text: the key is
#: its UTF-8 bytes.  Read at each use, where tasks are submitted and where they run.
KEY_VARIABLE = "XLOCAL_DASK_SIGNING_KEY"
#: Older keys still believed while keys are rotated, separated by whitespace.
OLD_KEYS_VARIABLE = "XLOCAL_DASK_OLD_SIGNING_KEYS"


def check_key(signing_key: object) -> tuple[bytes, ...]:
    """The secrets a ``signing_key=`` gives, the signing one first: a secret of
    non-empty bytes, or a non-empty sequence of them."""
    if isinstance(signing_key, Sequence) and not isinstance(
        signing_key, (str, bytes, bytearray)
    ):
        keys = tuple(signing_key)
        if not keys:
            raise TypeError(_bad_key("an empty sequence"))
    else:
        keys = (signing_key,)
    for key in keys:
        if type(key) is not bytes or not key:
            given = "empty bytes" if key == b"" else type(key).__name__
            raise TypeError(_bad_key(given))
    return keys


def _bad_key(given: str) -> str:
    return (
        f"signing_key= must be a secret of non-empty bytes (or a sequence of them, "
        f"the one that signs first), the same where tasks are submitted and on the "
        f"workers (their {KEY_VARIABLE}), not {given}"
    )


def process_keys() -> tuple[bytes, ...] | None:
    """This process's keys, from its environment, the signing one first: None if it
    has none."""
    text = os.environ.get(KEY_VARIABLE)
    old = os.environ.get(OLD_KEYS_VARIABLE, "").split()
    if text is None:
        if old:
            raise ValueError(
                f"{OLD_KEYS_VARIABLE} is set in this process, but not "
                f"{KEY_VARIABLE}: set that to the key that signs, or unset both"
            )
        return None
    if not text:
        raise ValueError(
            f"{KEY_VARIABLE} is set but empty in this process: set it to the secret "
            f"that the clients and workers share, or unset it"
        )
    # os.environ decoded the bytes with surrogateescape: these are the same bytes.
    return tuple(key.encode("utf-8", "surrogateescape") for key in (text, *old))


def awaited(func: Callable[..., Any]) -> bool:
    """Whether distributed awaits what *func* returns, by its own test.

    distributed.utils.iscoroutinefunction: ``inspect.iscoroutinefunction`` (which
    unwraps partials and methods, and from Python 3.12 sees the mark of
    ``inspect.markcoroutinefunction``), or tornado's mark of its coroutines.
    """
    return inspect.iscoroutinefunction(func) or bool(
        getattr(func, "__tornado_coroutine__", False)
    )


_REFUSED = {
    GENERATOR: "a generator function",
    ASYNC_GENERATOR: "an async generator function",
}


def runnable(func: Callable[..., Any]) -> None:
    """Refuse what a task could not run in its bindings, as Dask does not await it.

    A task gives what its function returns.  Dask awaits it only if the function is
    a coroutine function by distributed's test (see ``awaited``).  An object with an
    ``async def __call__`` is not one, so Dask would hand back an unawaited coroutine;
    a generator or an async generator would run its body after the task ended.  Plain
    Dask fails to send such a result back; this refuses it at once.
    """
    if awaited(func):
        return
    made = kind(func)
    if made == COROUTINE:
        raise TypeError(
            f"xlocal.dask cannot run {func!r} as a task: its `async def __call__` "
            f"makes a coroutine that Dask does not await (it awaits coroutine "
            f"functions only); submit its bound method (obj.__call__) or an async def "
            f"function"
        )
    if made in _REFUSED:
        raise TypeError(
            f"xlocal.dask cannot run {func!r} as a task: it is {_REFUSED[made]}, and a "
            f"task gives what its function returns: its body would run after the task "
            f"ended, outside the task's bindings; submit a function that consumes it"
        )


def _mark_coroutine_function(carried: Carried) -> None:
    """Make *carried* a coroutine function to distributed on every Python."""
    # Before 3.12 inspect.iscoroutinefunction is true of functions only, never of an
    # instance; distributed also believes tornado's mark (it has since 2019, and awaits
    # tasks since 2021).
    carried.__tornado_coroutine__ = True  # type: ignore[attr-defined]
    mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
    if mark is not None:
        mark(carried)


def _name(func: Callable[..., Any]) -> str:
    """*func*'s dotted name, or its repr."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}.{qualname}"
    return repr(func)


def _running_key() -> object:
    """The key of the Dask task running in this thread, where distributed says it."""
    state = getattr(sys.modules.get("distributed.worker"), "thread_state", None)
    return getattr(state, "key", None)


class Carried:
    """A function and the portable bindings of its submitter, to run on a worker.

    Calling it runs the function in a copy of the worker's context (Dask keeps the
    worker there) where xlocal's own state (every xlocal binding, every ``Local`` and
    ``LocalStack``'s data) is hidden and the carried ones are bound
    by a with-block; nothing it binds outlives the call.  A coroutine function stays
    one (by distributed's test, so that the worker awaits it): the call returns a
    coroutine that awaits the function's coroutine inside such a with-block, every
    step in one copy of the awaiting task's context.  It keeps the function's name
    (a partial's function's) and docstring, and tokenizes as the function and the
    carrier.

    Where it runs, the carrier is read with the process's key, its
    ``XLOCAL_DASK_SIGNING_KEY``, if it has one: a carrier that is not signed with it,
    or cannot be read, fails the task with :class:`~xlocal.portable.CarrierError`
    before the function runs.

    .. versionadded:: 1.0
    """

    def __init__(self, func: Callable[..., Any], carrier: Mapping[str, str]) -> None:
        runnable(func)
        functools.update_wrapper(self, func)
        if "__name__" not in vars(self):
            # Dask names a partial's task by its function; so does this.
            inner = func
            while isinstance(inner, functools.partial):
                inner = inner.func
            name = getattr(inner, "__name__", None)
            if isinstance(name, str):
                self.__name__ = name
        self._func = func
        self._carrier = dict(carrier)
        self._awaits = awaited(func)
        if self._awaits:
            _mark_coroutine_function(self)

    @property
    def carrier(self) -> Mapping[str, str]:
        """The carrier, read-only."""
        return MappingProxyType(self._carrier)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._awaits:
            return self._await_in_context(args, kwargs)
        return contextvars.copy_context().run(self._run, args, kwargs)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        extracted = self._extracted()
        with hidden(), extracted:
            return self._func(*args, **kwargs)

    async def _await_in_context(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # Every step in one copy of the context of the task that awaits it, so that
        # its bindings stay with it across awaits and never reach that task.
        steps = ContextGenerator(
            self._await(args, kwargs),  # type: ignore[arg-type]
            contextvars.copy_context(),
        )
        return await steps

    async def _await(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        extracted = self._extracted()
        with hidden(), extracted:
            return await self._func(*args, **kwargs)

    def _extracted(self) -> Extracted:
        """The carried bindings, read with this process's key, or the task's error."""
        key = process_keys()
        try:
            return extract(self._carrier, key=key)
        except CarrierError as error:
            running = _running_key()
            name = _name(self._func)
            task = (
                f"a task of {name}" if running is None else f"task {running!r} ({name})"
            )
            fix = (
                ""
                if key is None
                else f". Tasks run here must be signed with this process's "
                f"{KEY_VARIABLE}: sign them with the same key where they are "
                f"submitted (set the variable there too, or pass signing_key=)"
            )
            raise CarrierError(
                f"xlocal.dask refused to run {task}: {error}{fix}"
            ) from None

    def __reduce__(self) -> tuple[Any, ...]:
        return Carried, (self._func, self._carrier)

    def __dask_tokenize__(self) -> object:
        from dask.base import normalize_token  # noqa: PLC0415 - only Dask calls this

        return (
            "xlocal.dask.Carried",
            normalize_token(self._func),
            self._carrier.get(CARRIER_KEY),
            self._carrier.get(SIGNATURE_KEY),
        )

    def __repr__(self) -> str:
        return f"<Carried {self._func!r}>"


def carried(func: Callable[..., Any], *, signing_key: Key | None = None) -> Carried:
    """Return *func* with the portable bindings in force now, for Dask to run.

    An unencodable value raises :class:`~xlocal.portable.UnportableError` here.  A
    function that is already carried is carried again with the bindings of now.  A
    coroutine function stays one, for the worker to await; an object with an
    ``async def __call__``, a generator function and an async generator function
    raise ``TypeError``, as Dask would not await them.

    The carrier is signed with *signing_key* (the first, if a sequence), or else with
    the process's key, its ``XLOCAL_DASK_SIGNING_KEY`` environment variable (its UTF-8
    bytes), if set.  A worker whose environment has the variable refuses carriers not
    signed with it or with one of its ``XLOCAL_DASK_OLD_SIGNING_KEYS``.

    .. versionadded:: 1.0
    """
    if not callable(func):
        raise TypeError(
            f"xlocal.dask needs a callable to submit, not {type(func).__name__}"
        )
    keys = process_keys() if signing_key is None else check_key(signing_key)
    if isinstance(func, Carried):
        func = func._func
    return Carried(func, inject(key=keys))
