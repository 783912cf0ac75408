"""The portable xlocals of the process, by name: what may cross a process boundary.

``xlocal(name, portable=..., codec=...)`` checks its arguments here and registers the
xlocal under its name, the key that carriers use; ``xlocal.portable`` looks xlocals up
here.  The registry holds weak references, so a collected xlocal frees its name.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from ._frames import _object_getattribute

#: The portable xlocals of this process, by name: the key carriers use.  Weak, so that
#: a collected xlocal frees its name.
_portables: dict[str, weakref.ref[Any]] = {}
#: Taken to change _portables.  Reentrant: the collector may run _unregister in a
#: thread that holds it already (a collection started inside _register_portable).
_portables_lock = threading.RLock()


def _portable_names(
    name: str | None, portable: object, codec: object
) -> frozenset[str] | bool:
    """Check the ``portable=`` and ``codec=`` arguments of ``xlocal()``."""
    if portable is None or portable is False:
        if codec is not None:
            raise TypeError(
                f"xlocal({name!r}) got a codec but is not portable: pass "
                f"`portable=True` or `portable={{...names...}}` too"
            )
        return False
    if codec is not None and not (
        callable(getattr(codec, "encode", None))
        and callable(getattr(codec, "decode", None))
    ):
        raise TypeError(
            f"codec of xlocal({name!r}) must have encode(value) -> str and "
            f"decode(text) -> value methods; {type(codec).__name__} has not"
        )
    if not name:
        raise TypeError(
            "a portable xlocal needs a name, the key that carriers use: "
            "`xlocal('myapp.request', portable=...)`"
        )
    if portable is True:
        return True
    if isinstance(portable, (str, bytes)) or not isinstance(portable, Iterable):
        raise TypeError(
            f"portable= of xlocal({name!r}) must be True or a collection of names, "
            f"as in `portable={{'user_id'}}`, not {type(portable).__name__}"
        )
    names = frozenset(portable)
    for key in names:
        if not isinstance(key, str) or not key.isidentifier() or key[:1] == "_":
            raise ValueError(
                f"portable= of xlocal({name!r}) names {key!r}, which cannot be "
                f"bound: portable names are identifiers not starting with '_'"
            )
    if not names:
        raise ValueError(
            f"portable= of xlocal({name!r}) is empty: name the names that may "
            f"cross a process boundary, or leave portable= out"
        )
    return names


def _register_portable(x: object) -> None:
    name: str = _object_getattribute(x, "_name")
    with _portables_lock:
        other = _portables.get(name)
        if other is not None and other() is not None:
            raise ValueError(
                f"a portable xlocal named {name!r} exists already in this process: "
                f"the name is the key carriers use, so it must be unique; import "
                f"the existing one instead of making another"
            )
        _portables[name] = weakref.ref(x, functools.partial(_unregister, name))


def _unregister(name: str, ref: weakref.ref[Any]) -> None:
    # Run by the collector, in any thread.  Under the lock: between the check and the
    # delete another thread could register a newer xlocal of the name, whose entry
    # must stay (the GIL does not make the two steps one).
    with _portables_lock:
        if _portables.get(name) is ref:
            del _portables[name]
