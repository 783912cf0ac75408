"""What the environment asks of the core, checked and loaded once, at import.

The switches read from environment variables, the check that greenlet gives each
greenlet its own context, and the compiled core: ``xlocal._cxlocal`` is loaded here, or
None is kept for the pure-Python core, and ``IMPLEMENTATION`` says which one runs.
Every other room of the core reads ``_cxlocal`` from here; nothing here knows them.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

__all__ = ["IMPLEMENTATION"]


def _check_greenlet() -> None:
    """Refuse to run with a greenlet that shares one context between greenlets."""
    try:
        greenlet = importlib.import_module("greenlet")
    except ImportError:
        return
    if not getattr(greenlet, "GREENLET_USE_CONTEXT_VARS", False):
        raise ImportError(
            f"xlocal needs greenlet 0.4.17 or newer, but greenlet "
            f"{getattr(greenlet, '__version__', '(unknown version)')} is installed: "
            f"it does not give each greenlet its own contextvars.Context, so greenlets "
            f"would see each other's bindings; upgrade it: `pip install -U greenlet`"
        )


_check_greenlet()


def _flag_from_environment(variable: str, meaning: str) -> bool:
    """What the environment variable *variable*, a switch that does *meaning*, asks
    for; anything unclear is an error, not a guess."""
    value = os.environ.get(variable, "")
    setting = value.strip().lower()
    if setting in ("", "0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    raise ValueError(
        f"{variable}={value!r} is not understood: set it to 1, true, yes or on to "
        f"{meaning}, or to 0, false, no, off or nothing to leave it off"
    )


def _load_extension() -> Any:
    """The compiled core, xlocal._cxlocal, or None for the pure-Python core.

    The pure core is used on interpreters other than CPython, when the extension was
    not built (no compiler at install) or does not load, and when
    ``XLOCAL_NO_EXTENSIONS`` asks for it; only in the middle case does xlocal warn.
    """
    if (
        _flag_from_environment("XLOCAL_NO_EXTENSIONS", "use the pure-Python core")
        or sys.implementation.name != "cpython"
    ):
        return None
    try:
        return importlib.import_module("xlocal._cxlocal")
    except ImportError as error:
        _warn_pure_core(error)
        return None


def _warn_pure_core(error: ImportError) -> None:
    """Warn that the compiled core, which a CPython with the GIL should have, failed
    to import with *error*, saying why (the note of a build that fell back to the pure
    core, written by setup.py) and what to do."""
    import sysconfig  # noqa: PLC0415 - only here, off the import's usual path

    if sysconfig.get_config_var("Py_GIL_DISABLED"):  # setup.py makes no extension
        return
    if not (isinstance(error, ModuleNotFoundError) and error.name == "xlocal._cxlocal"):
        why = f"failed to load ({type(error).__name__}: {error})"
    else:
        try:
            note = importlib.import_module("xlocal._build_note")
        except ImportError:
            why = "is not installed (this copy of xlocal was not built)"
        else:
            reason = getattr(note, "REASON", "no reason recorded")
            why = f"was not built when xlocal was installed ({reason})"
    warnings.warn(
        f"xlocal uses its pure-Python core, slower than the compiled one, because "
        f"xlocal._cxlocal {why}: install a C compiler and the Python headers (for "
        f"example `apt-get install gcc python3-dev`) and reinstall xlocal with "
        f"`pip install --force-reinstall --no-cache-dir xlocal`, or set "
        f"XLOCAL_NO_EXTENSIONS=1 to choose the pure core without this warning",
        RuntimeWarning,
        stacklevel=3,
    )


#: The compiled core, which _reader, _binder and Binding use when it is loaded.
_cxlocal = _load_extension()

#: Which core runs: "c" (the compiled fast path) or "python" (the pure core).
IMPLEMENTATION = "python" if _cxlocal is None else "c"
