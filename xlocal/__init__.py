"""Execution locals: request-scoped state without globals.

An ``xlocal`` is a global-looking object whose attributes are bound only by a
with-statement and are seen only by the code that runs inside it, in the same thread,
greenlet or asyncio task::

    from xlocal import xlocal
    xcurrent = xlocal("xcurrent")

    with xcurrent(request=req):
        handler()          # xcurrent.request is req here, and in all it calls

See README.txt for the manual.
"""

from ._core import IMPLEMENTATION, Binding, get_debug, new, set_debug, xlocal
from .scopes import ScopeClosedError, scope
from .spawn import ContextExecutor, Snapshot, Thread, capture, isolated, wrap

__version__ = "1.0.0a1"

__all__ = [  # noqa: RUF022 - plainly sorted, as tests/test_core.py checks
    "Binding",
    "ContextExecutor",
    "IMPLEMENTATION",
    "ScopeClosedError",
    "Snapshot",
    "Thread",
    "__version__",
    "capture",
    "get_debug",
    "isolated",
    "new",
    "scope",
    "set_debug",
    "wrap",
    "xlocal",
]

# Show the public objects where users import them from.
for _name in __all__:
    if _name not in ("__version__", "IMPLEMENTATION"):
        globals()[_name].__module__ = __name__
del _name
