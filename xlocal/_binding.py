"""Binding: names to bind on an xlocal, entered by with-statements, and a decorator.

``Binding.__enter__`` and ``__exit__`` are the hot path of the pure core (the compiled
core installs its own, which fall back to these); every exit that is not the plain
innermost one goes on to ``xlocal._misuse``.  As a decorator, a binding is entered
anew at each call, around a coroutine's whole await and each step of a generator.
"""

from __future__ import annotations

import contextvars
import functools
import sys
from collections.abc import Hashable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Generic, NoReturn, TypeVar, cast

from ._debug import _debug_enter, _record_where
from ._errors import _call_form
from ._frames import _ENTRY, _enter_for
from ._misuse import _exit_elsewhere, _exit_rest
from ._steps import (
    ASYNC_GENERATOR,
    COROUTINE,
    GENERATOR,
    ContextAsyncGenerator,
    ContextGenerator,
    async_within,
    kind,
    lazy,
    within,
)

if TYPE_CHECKING:
    from ._frames import _OpenEntry

__all__ = ["Binding", "enter_as", "exit_as"]

#: What entering a binding gives: the xlocal.  Not bound to xlocal, because the bound
#: sends mypy into an endless recursion when it checks how xlocal is called.
_B = TypeVar("_B")
_F = TypeVar("_F", bound=Callable[..., Any])

_getframe = sys._getframe


class Binding(Generic[_B]):
    """Names to bind on an xlocal, made by calling it: ``xcurrent(request=req)``.

    Entering binds the names in the current execution on top of what it has already
    bound, and gives the xlocal itself (``with xcurrent(x=1) as x:``).  Exiting restores
    the bindings that were there before.  A binding may be entered again later, nested
    inside itself, and by several threads or tasks at once: each entry is independent.

    Entries must be exited in the reverse order of entering, in the execution that
    entered them; otherwise exiting raises RuntimeError.  An entry exited out of order
    takes every entry made after it with it, so that no stale binding is left behind;
    an entry exited in another execution changes nothing.

    .. versionadded:: 1.0
    """

    __slots__ = ("_entries", "_names", "_var", "_where", "_xlocal")

    # Made only by calling an xlocal, which checks the names and hands over the fresh
    # dict of its keyword arguments: kept as it is, never copied nor changed.  The
    # xlocal's variable is kept too, so that entering and exiting look nothing up.
    _xlocal: _B
    _var: contextvars.ContextVar[dict[Any, Any]]
    _names: dict[str, Any]
    # The open entries, by their owner: the Python frame that entered them (the frame
    # running the with-statement, kept alive so that no other frame can take its id
    # while the entry is open), or an object standing for one (enter_as):
    # ``(record, token, older)``, where *older* is an earlier open entry made by the
    # same owner, or None.
    _entries: dict[Hashable, _OpenEntry]
    _where: str  # where it was last entered, in debug mode only

    def __new__(cls, *args: Any, **kwargs: Any) -> Binding[_B]:
        raise TypeError(
            "a Binding is made by calling an xlocal: `xcurrent(name=value)`"
        )

    def __enter__(self) -> _B:
        # _enter_for, written out: the hot path of the pure core.  It calls var.set,
        # not _set: where the compiled core is loaded (the only case where _set is
        # not var.set), this runs only for the compiled __enter__'s rare fallbacks.
        var, names, entries = self._var, self._names, self._entries
        x = self._xlocal
        parent = var.get()
        frame = {**parent, **names}
        frame[_ENTRY] = record = (names, parent)
        owner = _getframe(1)
        token = var.set(frame)
        try:
            entries[owner] = (record, token, entries.get(owner))
        except BaseException:
            var.reset(token)
            raise
        return x

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        owner = _getframe(1)
        var = self._var
        mine = self._entries.pop(owner, None)
        if mine is not None and mine[2] is None and var.get()[_ENTRY] is mine[0]:
            try:
                var.reset(mine[1])  # as in __enter__, no _reset needed
            except (ValueError, RuntimeError) as error:
                _exit_elsewhere(self, mine[0], error)
            return
        _exit_rest(self, owner, mine)

    async def __aenter__(self) -> _B:
        # The frame that awaits this one runs the async with-statement: it owns the
        # entry, as the caller of __enter__ does for a with-statement.
        target: _B = enter_as(self, _getframe(1))
        return target

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        exit_as(self, _getframe(1))

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(
            f"cannot copy or pickle {self!r}: a binding is entered by with-statements "
            f"in this process; make another by calling the xlocal, or carry bindings "
            f"to other processes with xlocal.portable"
        )

    def __call__(self, func: _F) -> _F:
        """Decorate *func* to run with these names bound, on top of the caller's.

        The binding is entered anew at each call, in the execution that makes the call,
        so it works for functions handed to other threads or greenlets.  For a
        coroutine function the binding covers the whole awaited call.  A generator or
        async generator function gets a generator that runs each of its steps with the
        binding, on top of the bindings of the code that called it; its consumer never
        sees the binding.
        """
        if not callable(func):
            raise TypeError(
                f"{self!r} decorates a callable, not {type(func).__name__}; to bind "
                f"names for a block, use "
                f"`with {_call_form(self._xlocal)}(...):`"
            )
        bound: Callable[..., Any]
        made = kind(func)
        if made == COROUTINE:

            async def bound(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

        elif made:

            def bound(*args: Any, **kwargs: Any) -> Any:
                return _bound_steps(self, made, func(*args, **kwargs))

        else:

            def bound(*args: Any, **kwargs: Any) -> Any:
                with self:
                    result = func(*args, **kwargs)
                later = lazy(result)
                return _bound_steps(self, later, result) if later else result

        return cast("_F", functools.wraps(func)(bound))

    def __repr__(self) -> str:
        names = ", ".join(f"{name}=..." for name in self._names)
        return f"<Binding {_call_form(self._xlocal)}({names})>"


def enter_as(binding: Binding[_B], owner: Hashable) -> _B:
    """Enter *binding* on behalf of *owner*: the frame running an async with-statement,
    the caller of a helper that enters several bindings (``Extracted``), or an object
    that stands for a request whose entry is exited by another function.

    :func:`exit_as` with the same *owner* finds the entry by it; any other exit finds
    it as an exit from a frame that did not make the entry would.
    """
    target: _B = _enter_for(binding, owner)
    if Binding.__enter__ is _debug_enter:
        _record_where(binding)
    return target


def exit_as(binding: Binding[Any], owner: Hashable) -> None:
    """Exit the entry that :func:`enter_as` made for *owner*: ``Binding.__exit__``
    with the owner given rather than read from the calling frame.  The entry is found
    by its owner, so no exit path has to look for it among the running frames."""
    _exit_rest(binding, owner, binding._entries.pop(owner, None))


def _bound_steps(binding: Binding[Any], made: int, result: Any) -> Any:
    """*result*, a suspendable object of kind *made*, run inside *binding*.

    A generator or async generator runs each step with the binding, on top of the
    bindings of the code that made it, in a context of its own; a coroutine or other
    awaitable is awaited inside the binding, in the execution that awaits it.
    """
    if made == GENERATOR:
        return ContextGenerator(within(binding, result), contextvars.copy_context())
    if made == ASYNC_GENERATOR:
        steps = async_within(binding, result)
        return ContextAsyncGenerator(steps, contextvars.copy_context())
    return _await_within(binding, result)


async def _await_within(binding: Binding[Any], awaitable: Any) -> Any:
    with binding:
        return await awaitable
