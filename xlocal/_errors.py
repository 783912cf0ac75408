"""The unbound-name errors, and how messages name an xlocal and its bindings.

A read of a name that is not bound raises ``_UnboundError`` (or ``_UndeclaredError``
for a name a typed namespace does not declare): an AttributeError whose message is
made only when it is shown.  ``_label``, ``_call_form``, ``_kw`` and ``_describe``
give every message of the package the same way of naming things.
"""

from __future__ import annotations

import weakref
from typing import Any

from ._frames import _object_getattribute

#: What to check when a name of an xlocal is not bound, said by what binds it (the
#: middleware): read only when an unbound-name message is shown, so reads pay nothing.
_hints: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


class _UnboundError(AttributeError):
    """The AttributeError for a name that is not bound; its message is made when shown.

    ``hasattr`` and ``getattr`` with a default drop the error unseen, and formatting
    the message up front was most of the cost of asking for a missing name.  The error
    presents itself as a plain AttributeError, in tracebacks and when pickled; Python
    3.10+ sets its ``name`` and ``obj`` as for any failed attribute read.
    """

    def __str__(self) -> str:
        attr, x = self.args
        hint = _hints.get(x)
        return (
            f"{attr!r} is not bound on {_label(x)} in this execution: bind it with "
            f"`with {_call_form(x)}({_kw(attr)}=...)`" + (f". {hint}" if hint else "")
        )

    def __repr__(self) -> str:
        return f"AttributeError({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return AttributeError, (str(self),)


class _UndeclaredError(_UnboundError):
    """The AttributeError for a name a typed namespace does not declare."""

    def __str__(self) -> str:
        attr, x = self.args
        declared = _object_getattribute(x, "_namespace").declared
        return (
            f"{attr!r} is not a declared name of {_label(x)}: its names are "
            f"{', '.join(sorted(declared))}"
        )


def _missed(error: type[_UnboundError], attr: str, x: Any) -> _UnboundError:
    """The error for a read of *attr* on *x* that found nothing, with the name and the
    object set, as Python's own attribute reads set them.  Set here, not left to
    Python: it does not set them when its specialised bytecode calls a
    ``__getattribute__`` written in Python, so the pure core's errors would have them
    or not depending on how often the read ran.  The compiled core sets them too."""
    found = error(attr, x)
    found.name = attr
    found.obj = x
    return found


for _error in (_UnboundError, _UndeclaredError):
    _error.__module__ = "builtins"
    _error.__name__ = _error.__qualname__ = "AttributeError"
del _error


def _label(x: object) -> str:
    name = _object_getattribute(x, "_name")
    kind = type(x).__name__
    return f"<{kind} {name!r}>" if name else f"<{kind} at {id(x):#x}>"


def _call_form(x: object) -> str:
    name: str | None = _object_getattribute(x, "_name")
    return name if name and name.isidentifier() else _label(x)


def _kw(attr: str) -> str:
    return attr if attr.isidentifier() else "..."


def _describe(x: object, names: dict[str, Any]) -> str:
    """The repr of a binding of *names* on *x*."""
    shown = ", ".join(f"{name}=..." for name in names)
    return f"<Binding {_call_form(x)}({shown})>"
