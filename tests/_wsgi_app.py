"""A WSGI app for the end-to-end tests, and a gevent server to run it in a subprocess.

Run as a script (``python _wsgi_app.py FD COUNT``) it monkey-patches the process with
gevent and serves the app on the listening socket FD until ``/shutdown``.
"""

from __future__ import annotations

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import json
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from xlocal import xlocal
from xlocal.local import Local, proxy
from xlocal.wsgi import XlocalMiddleware

TIMEOUT = 20.0

xcurrent = xlocal("xcurrent")
local = Local()
request = proxy(xcurrent, "request")


class Request:
    """The request object the middleware makes from the environ."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.id = int(parse_qs(environ["QUERY_STRING"])["id"][0])


class Gate:
    """Let nobody through until *count* have arrived, or the timeout has passed."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._arrived = 0
        self._lock = threading.Lock()
        self._open = threading.Event()

    def wait(self) -> bool:
        with self._lock:
            self._arrived += 1
            if self._arrived >= self._count:
                self._open.set()
        return self._open.wait(TIMEOUT)


class Server:
    """The app with its own counters: gates, closes, and what the probes saw.

    Requests with ids below *count* wait at the gates until all of them are inside;
    the same number of requests follow on the same connections, ungated.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.in_app = Gate(count)
        self.in_iteration = Gate(count)
        self.problems: list[str] = []
        self.closed = 0
        self._lock = threading.Lock()
        self.all_closed = threading.Event()
        self.shutdown: Callable[[], None] | None = None
        self.app = self.probe(
            XlocalMiddleware(
                self.handler, xcurrent, factories={"request": Request}, locals=[local]
            )
        )

    def handler(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Read the request after yielding to all others, in the app and the body."""
        request_id = xcurrent.request.id
        local.request_id = request_id
        if request_id < self.count and not self.in_app.wait():
            self.problems.append(f"{request_id}: gate in app timed out")
        seen = f"{xcurrent.request.id:06d}|{local.request_id:06d}|{request.id:06d}"
        start_response("200 OK", [("Content-Length", "35")])
        return _Body(self, request_id, seen)

    def probe(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Any]:
        """Wrap *app*: check that nothing is bound around it; serve the test routes."""

        def probed(
            environ: dict[str, Any], start_response: Callable[..., Any]
        ) -> Iterable[bytes]:
            path = environ["PATH_INFO"]
            if path != "/":
                return self.route(path, start_response)
            self.check_clean("before the app")
            response = app(environ, start_response)
            self.check_clean("after the app returned")
            return _Closing(response, lambda: self.check_clean("after close"))

        return probed

    def check_clean(self, when: str) -> None:
        if dir(xcurrent) or list(local):
            self.problems.append(f"{when}: {xcurrent!r} {list(local)!r}")

    def count_close(self) -> None:
        with self._lock:
            self.closed += 1
            if self.closed >= 2 * self.count:
                self.all_closed.set()

    def route(self, path: str, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if path == "/stats":
            self.all_closed.wait(TIMEOUT)
            body = json.dumps({"closed": self.closed, "problems": self.problems})
        elif path == "/shutdown" and self.shutdown:
            self.shutdown()
            body = "{}"
        else:
            body = "{}"
        data = body.encode()
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]


class _Body:
    """The response: read xcurrent while iterated and when closed."""

    def __init__(self, server: Server, request_id: int, seen: str) -> None:
        self._server = server
        self._id = request_id
        self._seen = seen

    def __iter__(self) -> Iterator[bytes]:
        yield self._seen.encode()
        gated = self._id < self._server.count
        if gated and not self._server.in_iteration.wait():
            self._server.problems.append(f"{self._id}: gate in body timed out")
        yield f"|{xcurrent.request.id:06d}|{local.request_id:06d}|".encode()

    def close(self) -> None:
        if xcurrent.request.id != self._id or local.request_id != self._id:
            self._server.problems.append(f"{self._id}: wrong request at close")
        self._server.count_close()


class _Closing:
    """Close the wrapped response, then call *after*."""

    def __init__(self, response: Iterable[bytes], after: Callable[[], None]) -> None:
        self._response = response
        self._after = after

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._response)

    def close(self) -> None:
        close = getattr(self._response, "close", None)
        if close:
            close()
        self._after()


def serve_gevent(fd: int, count: int) -> None:
    """Serve the app with gevent's WSGI server on the listening socket *fd*."""
    import socket  # noqa: PLC0415 - patched by gevent above

    from gevent.pywsgi import WSGIServer  # noqa: PLC0415

    server = Server(count)
    listener = socket.socket(fileno=fd)
    wsgi = WSGIServer(listener, server.app, log=None, error_log=sys.stderr)
    stop = threading.Event()
    server.shutdown = stop.set
    wsgi.start()
    stop.wait(120)
    wsgi.stop(timeout=5)


if __name__ == "__main__":
    serve_gevent(int(sys.argv[1]), int(sys.argv[2]))
