"""What the engine adapters (``xlocal.celery``, ``xlocal.dask``) share.

A task carried to an engine must see the carried portable bindings and nothing else:
on a worker that is what a fresh process has, but an engine may run the task where
something is bound (Celery's eager mode runs it in the caller's own thread; a worker
thread may have inherited its creator's bindings, or kept what its last task wrote).
``hidden()`` makes xlocal's own state of the current execution look empty until it
exits: every xlocal unbound, and the data of every werkzeug-compatible ``Local`` and
``LocalStack`` (so every proxy to them) gone, exactly what ``xlocal.capture()``
carries.  It touches nothing else in the context (an engine keeps its own context
variables there: Dask finds its worker through one).  When it exits, that state is
as it was when it entered, whatever the block wrote.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from ._frames import _ENTRY, _carried, _reset, _set

__all__ = ["hidden"]


def _unbound(frame: dict[Any, Any]) -> dict[Any, Any]:
    """The frame under every entry of *frame*: its xlocal's, where nothing is bound
    (a typed namespace's defaults included)."""
    while frame[_ENTRY] is not None:
        frame = frame[_ENTRY][1]
    return frame


def _emptied(var: contextvars.ContextVar[Any], value: Any) -> Any:
    """What *var*, a variable of xlocal's own holding *value*, holds where it is empty.

    An xlocal's frame gives its unbound frame; any other variable its default, where
    it has one (the current ``xlocal.scope``'s: none); any other value of xlocal's own
    (the data of a ``Local`` or ``LocalStack``, never changed in place) is an instance
    of a container type whose call with no argument makes an empty one.
    """
    if type(value) is dict:
        return _unbound(value)
    try:
        return contextvars.Context().run(var.get)
    except LookupError:
        return type(value)()


@contextlib.contextmanager
def hidden() -> Iterator[None]:
    """Make xlocal's own state look empty in this execution until the block exits."""
    before = contextvars.copy_context()
    tokens = [
        (var, _set(var, _emptied(var, value)))
        for var, value in before.items()
        if _carried(value)
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            _reset(var, token)
        # A variable that the block made xlocal's own (a store it wrote first, a
        # binding it left open) gets back what it held, or empty where it held nothing.
        for var, value in contextvars.copy_context().items():
            if _carried(value) and not _carried(before.get(var)):
                _set(var, before[var] if var in before else _emptied(var, value))
