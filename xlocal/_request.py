"""What a request needs from its middleware beyond a with-block: a clean start, and
the server's own code kept outside the request's bindings.

Servers hand a request whatever context they are in when they start it, and run their
own callbacks in whatever context calls them.  Two things follow under real servers:

- uvicorn starts the next pipelined request on a connection from inside the previous
  request's last ``send()``, so its task starts with a copy of that request's
  bindings.  ``clean_start`` unbinds the served xlocal in the request's own context
  before anything is bound, so every request starts from nothing, whatever it was
  handed.
- uvicorn and hypercorn arm their keep-alive timers (and resume reading) inside
  ``send()`` and ``receive()``; each timer keeps a copy of the context it was armed in,
  and with it every value the request bound, until it fires.  ``outside`` runs each
  call of the server's ``send`` and ``receive`` in a copy of the context the request
  had when it reached the middleware, so what the server keeps holds no request value.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._core import xlocal
from ._frames import _empty_of, _var
from ._steps import ContextGenerator

__all__ = ["clean_start", "end_clean", "outside"]

_T = TypeVar("_T")


def clean_start(x: xlocal) -> contextvars.Token[dict[Any, Any]]:
    """Unbind every name of *x* in the current context; ``end_clean`` undoes it."""
    return _var(x).set(_empty_of(x))


def end_clean(x: xlocal, token: contextvars.Token[dict[Any, Any]]) -> None:
    """Restore what ``clean_start`` found; quietly, if the context is not the same."""
    with contextlib.suppress(ValueError, RuntimeError):
        _var(x).reset(token)


def outside(
    call: Callable[..., Awaitable[_T]], context: contextvars.Context
) -> Callable[..., Awaitable[_T]]:
    """Wrap the async *call* so that each call runs, every step, in a copy of *context*.

    Whatever the call schedules (callbacks, timers, tasks) copies that context, not the
    caller's; the caller's bindings never reach it.
    """

    async def detached(*args: Any) -> _T:
        own = context.copy()
        awaitable = own.run(call, *args)
        result: _T = await ContextGenerator(awaitable.__await__(), own)
        return result

    return detached
