"""The frame format: what an xlocal's variable holds, and the helpers that read it.

Each xlocal owns one ContextVar.  Its value is the top *frame* of the current
execution: a plain dict holding every name bound there, flattened, plus one private
entry (under the non-string key ``_ENTRY``) that records the binding's names and the
parent frame.  Frames are never changed once set, so snapshots share them freely.
This room makes a frame for an entry and sets it (``_enter_for``), walks the active
entries and the bound names of a frame, and tells xlocal's frames from other values of
context variables (``_carried``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING, Any, Callable

from ._environment import _cxlocal

if TYPE_CHECKING:
    from typing import Protocol

    class _Binding(Protocol):
        """What the rooms below ``Binding`` (this one, debug mode and the misuse
        paths) read and write of one: its slots."""

        _xlocal: Any
        _var: contextvars.ContextVar[dict[Any, Any]]
        _names: dict[str, Any]
        _entries: dict[Hashable, _OpenEntry]
        _where: str

        def __enter__(self) -> Any: ...


#: The key under which a frame records its entry: a tuple ``(names, parent frame)``, new
#: for each entry, whose ``names`` is the dict of the binding that made it.  The key is
#: not a string, so no attribute read can reach it, and the names a user binds can never
#: collide with it.
_ENTRY: Any = object()

#: The value of every xlocal's variable where nothing is bound.  Being the variable's
#: default, it is never stored in any context.
_EMPTY: dict[Any, Any] = {_ENTRY: None}

_object_getattribute = object.__getattribute__

#: How the core sets and resets a variable.  CPython 3.10 and 3.11 corrupt a thread's
#: context when a garbage collection starting inside ``set`` or ``reset`` runs a
#: finalizer that binds (fixed in 3.12); the compiled core's versions hold the
#: collector off meanwhile, and the pure core uses them when the compiled one is loaded.
_set: Callable[[Any, Any], Any] = contextvars.ContextVar.set
_reset: Callable[[Any, Any], None] = contextvars.ContextVar.reset
if _cxlocal is not None and _cxlocal.HOLDS_COLLECTOR_OFF:
    _set, _reset = _cxlocal.set, _cxlocal.reset


#: An open entry, as a binding keeps it: ``(record, token, older)``.
_OpenEntry = tuple[Any, "contextvars.Token[dict[Any, Any]]", Any]


def _enter_for(binding: _Binding, owner: Hashable) -> Any:
    """Binding.__enter__ for an entry made by the with-statement running in *owner*
    (a frame, or an object standing for one).

    The binding's slots are read once, before anything that may run other code (a
    name's ``__eq__``, a finalizer): the compiled core does the same.  If recording the
    entry fails after the names were bound, they are unbound again: nothing is left
    bound that no exit could find.
    """
    var, names, entries = binding._var, binding._names, binding._entries
    x = binding._xlocal
    parent = var.get()
    frame = {**parent, **names}
    frame[_ENTRY] = record = (names, parent)
    token = _set(var, frame)
    try:
        entries[owner] = (record, token, entries.get(owner))
    except BaseException:
        _reset(var, token)
        raise
    return x


def _empty_of(x: object) -> dict[Any, Any]:
    """The frame of *x* where nothing is bound: its variable's default."""
    empty: dict[Any, Any] = _object_getattribute(x, "_empty")
    return empty


def _var(x: object) -> contextvars.ContextVar[dict[Any, Any]]:
    var: contextvars.ContextVar[dict[Any, Any]] = _object_getattribute(x, "_var")
    return var


def _bound_names(x: object) -> Iterator[str]:
    return iter(_names(_var(x).get()))


def _active(frame: dict[Any, Any]) -> Iterator[tuple[Any, dict[Any, Any]]]:
    """The entries active in an execution, innermost first: ``(record, frame)``."""
    record = frame[_ENTRY]
    while record is not None:
        yield record, frame
        frame = record[1]
        record = frame[_ENTRY]


def _carried(value: Any) -> bool:
    """Whether a context variable holding *value* is xlocal's own, for spawn helpers.

    A frame of an xlocal, or a value whose type says it is safe to share between
    executions (it is never changed in place) with ``__xlocal_carried__ = True``.
    """
    if type(value) is dict:
        return _ENTRY in value
    return getattr(type(value), "__xlocal_carried__", False) is True


def _names(frame: dict[Any, Any]) -> dict[str, Any]:
    """The names bound in a frame: not its private records, nor declared defaults."""
    bound: set[str] = set()
    record = frame[_ENTRY]
    while record is not None:
        bound.update(record[0])
        record = record[1][_ENTRY]
    return {k: v for k, v in frame.items() if k in bound}
