"""ASGI middleware that binds request values on an xlocal for each request.

An ASGI request is one ``await app(scope, receive, send)``: the binding is a
with-block around it, entered and exited in the same asyncio task.  Other requests on
the same event loop run in other tasks, with contexts of their own, so they never see
it; tasks the app spawns get a snapshot that includes it.

Servers are less tidy than that (see ``_request.py``): the request starts with
nothing bound on the xlocal and its stores empty whatever the server's task carried,
and the server's ``send`` and ``receive`` run in the context the request arrived
with, so that nothing the server schedules there keeps a request's values.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from ._core import xlocal
from ._middleware import Releasable, run_all, setup
from ._request import clean_start, end_clean, outside

__all__ = ["ASGIApplication", "Receive", "Scope", "Send", "XlocalMiddleware"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApplication = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The scope types that are requests; others (``lifespan``) pass through unbound.
_REQUESTS = frozenset({"http", "websocket"})


class XlocalMiddleware:
    """Bind values on an xlocal for each HTTP or websocket request to an ASGI app.

    ::

        app = XlocalMiddleware(app, xcurrent, factories={"request": Request})

    binds ``xcurrent.scope`` and ``xcurrent.request`` (``Request(scope, receive,
    send)``, made once per request) while the app handles the request.  Afterwards the
    given Locals, LocalStacks and LocalManagers are released in the request's task.
    ``lifespan`` and other scopes are passed through with nothing bound.

    Each request starts with nothing bound on *x* and the stores empty, whatever
    context the server hands over, and the server's ``send`` and ``receive`` (with
    any middleware around this one) run without the request's bindings.

    :param app: the ASGI application.
    :param x: the xlocal to bind on.
    :param scope: the name to bind the ASGI scope under; None not to bind it.
    :param factories: names to bind, each with a callable that makes the value from
        ``(scope, receive, send)``.
    :param locals: a Local, LocalStack or LocalManager, or an iterable of them, to
        release when the request ends.

    .. versionadded:: 1.0
    """

    __slots__ = ("_app", "_factories", "_releases", "_scope", "_x")

    def __init__(
        self,
        app: ASGIApplication,
        x: xlocal,
        *,
        scope: str | None = "scope",
        factories: Mapping[str, Callable[[Scope, Receive, Send], Any]] | None = None,
        locals: Releasable | Iterable[Releasable] = (),
    ) -> None:
        self._app = app
        self._x = x
        self._scope = scope
        self._factories, self._releases = setup(
            app,
            x,
            kind="ASGI",
            own=scope,
            what="scope",
            factories=factories,
            locals=locals,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in _REQUESTS:
            await self._app(scope, receive, send)
            return
        # Start from nothing on this xlocal and these stores, whatever the server
        # handed over (uvicorn starts a pipelined request inside the last one's send),
        # and keep the server's send and receive out of the request's bindings.
        clean = clean_start(self._x)
        try:
            run_all(self._releases)
            outer = contextvars.copy_context()
            receive = outside(receive, outer)
            send = outside(send, outer)
            # The request may run in its caller's task (test clients await the app
            # directly), so the locals are released even if a factory fails; an
            # error releasing them is raised with the app's, not in its place.
            try:
                values = {
                    name: make(scope, receive, send)
                    for name, make in self._factories.items()
                }
                if self._scope is not None:
                    values[self._scope] = scope
                with self._x(**values):
                    await self._app(scope, receive, send)
            except BaseException as error:
                run_all(self._releases, error)
                raise
            run_all(self._releases)
        finally:
            end_clean(self._x, clean)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._app!r} on {self._x!r}>"
