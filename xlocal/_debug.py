"""Debug mode's records: where each binding was entered, for the misuse messages.

In debug mode ``Binding.__enter__`` is ``_debug_enter``, which enters and then records
the place in the user's code in the new frame (under ``_WHERE``) and on the binding.
The misuse messages name those places (``_entered``) and the place of the bad exit
(``_exited_at``).  The switch itself, ``set_debug``, is in ``xlocal._core``: it swaps
the method of the class, once the compiled core has installed its own.
"""

from __future__ import annotations

import os
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._errors import _describe
from ._frames import _ENTRY, _enter_for

if TYPE_CHECKING:
    from ._frames import _Binding

_getframe = sys._getframe

#: In debug mode, the key under which a frame records ``(record, place)``: where the
#: entry that made the frame was entered.  Tied to the entry's record, so that the
#: place a child frame copies from its parent is never taken for the child's own.
_WHERE: Any = object()

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller() -> str:
    """The place in the user's code that called into xlocal: ``file:line in func``."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
    if frame is None:  # pragma: no cover - some user frame always called us
        return "(unknown place)"
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"


def _entered(x: object, record: Any, frame: dict[Any, Any]) -> str:
    """The repr of the entry *record* of *x*, made in *frame*, with the place it was
    entered when debug mode recorded it."""
    where = frame.get(_WHERE)
    shown = _describe(x, record[0])
    if where is not None and where[0] is record:
        return f"{shown} (entered at {where[1]})"
    return shown


def _exited_at(binding: _Binding) -> str:
    """Where the bad exit of *binding* is, in debug mode: its class enters with
    ``_debug_enter`` then (this room cannot import the class, which imports it)."""
    return (
        f". The exit was at {_caller()}"
        if type(binding).__enter__ is _debug_enter
        else ""
    )


def _debug_enter(self: _Binding) -> Any:
    """Binding.__enter__ in debug mode: enter, then record where."""
    target = _enter_for(self, _getframe(1))
    _record_where(self)
    return target


def _record_where(binding: _Binding) -> None:
    """Record where the entry just made was made, for debug mode's messages."""
    where = _caller()
    frame = binding._var.get()
    frame[_WHERE] = (frame[_ENTRY], where)
    binding._where = where
