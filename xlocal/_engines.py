"""What the engine adapters (``xlocal.celery``, ``xlocal.dask``) share.

A task carried to an engine must see the carried portable bindings and nothing else:
on a worker that is what a fresh process has, but an engine may run the task where
something is bound (Celery's eager mode runs it in the caller's own thread; a worker
thread may have inherited its creator's bindings).  ``hidden()`` makes every xlocal of
the current execution look unbound until it exits, without touching anything else in
the context (an engine keeps its own context variables there: Dask finds its worker
through one).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from ._frames import _ENTRY

__all__ = ["hidden"]


def _unbound(frame: dict[Any, Any]) -> dict[Any, Any]:
    """The frame under every entry of *frame*: its xlocal's, where nothing is bound
    (a typed namespace's defaults included)."""
    while frame[_ENTRY] is not None:
        frame = frame[_ENTRY][1]
    return frame


@contextlib.contextmanager
def hidden() -> Iterator[None]:
    """Make every xlocal look unbound in this execution until the block exits."""
    tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = []
    for var, value in contextvars.copy_context().items():
        # Only an xlocal's variable holds frames: dicts with the private entry key.
        if type(value) is dict and _ENTRY in value and value[_ENTRY] is not None:
            tokens.append((var, var.set(_unbound(value))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
