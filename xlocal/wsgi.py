"""WSGI middleware that binds request values on an xlocal for the whole request.

A WSGI response is produced in steps: the call of the app, then each step of iterating
its response, then ``close()``; the server may take them at any moment.  Each request
therefore gets a ``contextvars.Context`` of its own (a copy of the server's at the time
of the call), the binding is entered in it once, every step runs inside it, and
``close()`` exits the binding there.  So the binding is entered and exited in the same
execution, it holds for generator apps and for code run while the server iterates, and
whatever the app stores in context variables (Locals included) stays with its request:
nothing reaches the server's thread or greenlet, not even if the server never closes
the response.  A response dropped without being closed is closed when it is freed, in
its own request's Context.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ._binding import enter_as, exit_as
from ._core import xlocal
from ._middleware import (
    ClosingIterable,
    ClosingIterator,
    Releasable,
    StartResponse,
    WSGIApplication,
    WSGIEnvironment,
    run_all,
    setup,
)
from ._request import clean_start

__all__ = [
    "ClosingIterable",
    "ClosingIterator",
    "StartResponse",
    "WSGIApplication",
    "WSGIEnvironment",
    "XlocalMiddleware",
]

# Defined with the plumbing that LocalManager.make_middleware shares; shown here.
ClosingIterable.__module__ = ClosingIterator.__module__ = __name__


class XlocalMiddleware:
    """Bind values on an xlocal for each request to a WSGI app, iteration included.

    ::

        app = XlocalMiddleware(app, xcurrent, factories={"request": Request})

    binds ``xcurrent.environ`` and ``xcurrent.request`` (``Request(environ)``, made
    once per request) while the app runs, while its response is iterated and while it
    is closed.  Afterwards the given Locals, LocalStacks and LocalManagers are
    released.  Each request starts with nothing bound on *x* and the stores empty,
    whatever the server's thread or greenlet holds.  A response that is the server's
    ``wsgi.file_wrapper`` is returned as it is, so that the server can use sendfile.

    :param app: the WSGI application.
    :param x: the xlocal to bind on.
    :param environ: the name to bind the WSGI environ under; None not to bind it.
    :param factories: names to bind, each with a callable that makes the value from
        the environ.
    :param locals: a Local, LocalStack or LocalManager, or an iterable of them, to
        release when the request ends.

    .. versionadded:: 1.0
    """

    __slots__ = ("_app", "_environ", "_factories", "_releases", "_x")

    def __init__(
        self,
        app: WSGIApplication,
        x: xlocal,
        *,
        environ: str | None = "environ",
        factories: Mapping[str, Callable[[WSGIEnvironment], Any]] | None = None,
        locals: Releasable | Iterable[Releasable] = (),
    ) -> None:
        self._app = app
        self._x = x
        self._environ = environ
        self._factories, self._releases = setup(
            app,
            x,
            kind="WSGI",
            own=environ,
            what="environ",
            factories=factories,
            locals=locals,
        )

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        context = contextvars.copy_context()
        return context.run(self._start, context, environ, start_response)

    def _start(
        self,
        context: contextvars.Context,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        # Start from nothing on this xlocal and these stores, whatever the server's
        # context holds; the Context is the request's own, so nothing needs undoing.
        clean_start(self._x)
        run_all(self._releases)
        values = {name: make(environ) for name, make in self._factories.items()}
        if self._environ is not None:
            values[self._environ] = environ
        # Entered here and exited by finish(), for an owner that stands for the
        # request: the exit finds its entry by it, not among the running frames.
        binding, request = self._x(**values), object()
        enter_as(binding, request)

        def finish() -> None:
            exit_as(binding, request)

        return serve(
            self._app, environ, start_response, context, finish, *self._releases
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._app!r} on {self._x!r}>"


def serve(
    app: WSGIApplication,
    environ: WSGIEnvironment,
    start_response: StartResponse,
    context: contextvars.Context,
    *callbacks: Callable[[], Any],
) -> Iterable[bytes]:
    """Call *app* in *context* (the current one), which is the request's own, and
    return its response bound to it: iterated and closed in *context*, and then the
    *callbacks* run there, also if the app raises or the response is dropped."""
    try:
        response = app(environ, start_response)
    except BaseException as error:
        run_all(callbacks, error)
        raise
    wrapper = environ.get("wsgi.file_wrapper")
    if isinstance(wrapper, type) and isinstance(response, wrapper):
        return _hand_back(response, context, *callbacks)
    return _BoundResponse(context, ClosingIterable(response, *callbacks))


def _hand_back(
    response: Any,
    context: contextvars.Context,
    *callbacks: Callable[[], Any],
) -> Iterable[bytes]:
    """Return the server's own file wrapper, closed inside the request's Context.

    Servers send a response that is an instance of their ``wsgi.file_wrapper`` with
    sendfile only if it reaches them unwrapped.  Its iteration reads the file and runs
    no app code; its ``close()`` (replaced on the instance) closes the file, then ends
    the request, inside the request's Context.  A wrapper that refuses the new
    ``close`` is wrapped like any response.
    """
    closing = ClosingIterable(_Closer(getattr(response, "close", None)), *callbacks)

    def close() -> None:
        context.run(closing.close)

    try:
        response.close = close
    except (AttributeError, TypeError):
        return _BoundResponse(context, ClosingIterable(response, *callbacks))
    result: Iterable[bytes] = response
    return result


class _Closer:
    """Only the ``close`` of a response, for ClosingIterable to call."""

    __slots__ = ("close",)

    def __init__(self, close: Callable[[], Any] | None) -> None:
        self.close = close or _nothing

    def __iter__(self) -> Iterator[bytes]:  # pragma: no cover - never iterated
        return iter(())


def _nothing() -> None:
    pass


class _BoundResponse:
    """Iterate and close a response inside its request's Context."""

    __slots__ = ("_context", "_iterator", "_response")

    def __init__(self, context: contextvars.Context, response: ClosingIterable) -> None:
        self._context = context
        self._response = response
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = self._context.run(iter, self._response)
        return self._context.run(next, self._iterator)

    def close(self) -> None:
        self._context.run(self._response.close)

    def __del__(self) -> None:
        # Dropped unclosed (a client that went away, a server that never calls close):
        # close it now, in its request's Context, so that the app's finally-blocks and
        # with-blocks end where they began, and the request's locals are released.
        # Without this the app's generator would be closed later by the garbage
        # collector, in whatever execution runs it.  Closing twice does nothing.
        self.close()
