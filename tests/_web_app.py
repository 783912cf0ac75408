"""The apps that the real-server tests serve: one ASGI, one WSGI, same routes.

Served in a subprocess by uvicorn, hypercorn, gunicorn or gevent.pywsgi (see
``_servers.py``), each request checks from the inside that it sees only its own values,
and the app keeps weak references to every value a request made.  Routes:

- ``/?id=N``: a plain response; ``&auth=1`` binds ``user`` for the rest of the
  request, as an authentication layer would.
- ``/stream?id=N&chunks=K``: K chunks, with a switch to other requests between them;
  ``&fail=1`` raises after the first chunk; ``&hang=1`` waits for the client to go.
- ``/file?id=N``: (WSGI) a file sent through the server's ``wsgi.file_wrapper``.
- ``/stats?expect=N``: once N requests have ended, what the probes saw, and how many
  request values are still alive after a garbage collection.

A request's id is the query's ``id``; every body holds only ids that must be its own.
"""

from __future__ import annotations

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import contextlib
import gc
import json
import os
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from xlocal import xlocal
from xlocal.local import Local

TIMEOUT = 30.0

xcurrent = xlocal("xcurrent")
local = Local()

#: Every value a request made (request object, user, Local value), while alive.
alive: weakref.WeakSet[Any] = weakref.WeakSet()


class Value:
    """A request-scoped value, tracked by weak reference."""

    def __init__(self, kind: str, request_id: int) -> None:
        self.kind = kind
        self.id = request_id
        alive.add(self)


class Request(Value):
    """The request object that the middleware binds as ``request``."""

    def __init__(self, query: str) -> None:
        args = parse_qs(query)
        super().__init__("request", int(args["id"][0]))
        self.args = {name: values[0] for name, values in args.items()}


class Probes:
    """What the requests saw: problems, ended requests, files sent."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.ended = 0
        self.reads: list[str] = []
        self.changed = threading.Condition()

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)

    def end(self) -> None:
        with self.changed:
            self.ended += 1
            self.changed.notify_all()

    def check(self, request_id: int, where: str, names: Iterable[str]) -> None:
        """The request sees its own values, and exactly the names it bound."""
        try:
            seen = (xcurrent.request.id, local.value.id)
        except AttributeError as error:
            self.problem(f"{request_id} {where}: {error}")
            return
        if seen != (request_id, request_id):
            self.problem(f"{request_id} {where}: saw {seen}")
        if sorted(dir(xcurrent)) != sorted(names):
            self.problem(f"{request_id} {where}: bound {dir(xcurrent)}")
        user = getattr(xcurrent, "user", None)
        if user is not None and user.id != request_id:
            self.problem(f"{request_id} {where}: user of {user.id}")

    def check_clean(self, where: str) -> None:
        if dir(xcurrent) or list(local):
            self.problem(f"{where}: {xcurrent!r} {list(local)!r}")

    def stats(self, expect: int) -> bytes:
        """Wait until *expect* requests ended; report, after a garbage collection."""
        with self.changed:
            self.changed.wait_for(lambda: self.ended >= expect, TIMEOUT)
        gc.collect()
        left = sorted(f"{value.kind} {value.id}" for value in alive)
        return json.dumps(
            {
                "ended": self.ended,
                "problems": self.problems,
                "alive": left[:20],
                "reads": self.reads,
            }
        ).encode()


probes = Probes()


# -- ASGI ------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]


def _asgi_request(scope: Scope, receive: Any, send: Any) -> Request:
    return Request(scope["query_string"].decode())


async def _asgi_handler(scope: Scope, receive: Any, send: Any) -> None:
    request = xcurrent.request
    request_id = request.id
    if sorted(dir(xcurrent)) != ["request", "scope"]:
        probes.problem(f"{request_id} at start: bound {dir(xcurrent)}")
    if list(local):
        probes.problem(f"{request_id} at start: Local holds {list(local)}")
    local.value = Value("local", request_id)
    if request.args.get("auth") == "1":
        with xcurrent(user=Value("user", request_id)):
            await _asgi_respond(scope, receive, send, ["request", "scope", "user"])
    else:
        await _asgi_respond(scope, receive, send, ["request", "scope"])


async def _asgi_respond(
    scope: Scope, receive: Any, send: Any, names: list[str]
) -> None:
    import asyncio  # noqa: PLC0415 - only the ASGI servers need it

    request_id = xcurrent.request.id
    args = xcurrent.request.args
    await asyncio.sleep(0)
    probes.check(request_id, "in the app", names)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in range(int(args.get("chunks", 3))):
            await send(
                {
                    "type": "http.response.body",
                    "body": f"{xcurrent.request.id:06d}|".encode(),
                    "more_body": True,
                }
            )
            probes.check(request_id, f"chunk {chunk}", names)
            if args.get("fail"):
                raise RuntimeError(f"injected failure in request {request_id}")
            if args.get("hang"):
                # No timeout here: asyncio's timers keep a copy of the context they
                # were armed in (even once cancelled) until their time comes.
                message = await receive()
                while message["type"] == "http.request":  # the (empty) body first
                    message = await receive()
                if message["type"] != "http.disconnect":
                    probes.problem(f"{request_id}: {message['type']} in hang")
                probes.check(request_id, "after the client left", names)
                return
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})
        return
    body = f"{request_id:06d}|{xcurrent.request.id:06d}|{local.value.id:06d}".encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    probes.check(request_id, "after the response", names)


def _make_asgi() -> Any:
    from xlocal.asgi import XlocalMiddleware  # noqa: PLC0415

    inner = XlocalMiddleware(
        _asgi_handler, xcurrent, factories={"request": _asgi_request}, locals=[local]
    )

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/stats":
            import asyncio  # noqa: PLC0415

            expect = int(parse_qs(scope["query_string"].decode())["expect"][0])
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(None, probes.stats, expect)
            headers = [(b"content-length", str(len(body)).encode())]
            await send(
                {"type": "http.response.start", "status": 200, "headers": headers}
            )
            await send({"type": "http.response.body", "body": body})
            return
        probes.check_clean("before the middleware")
        try:
            await inner(scope, receive, send)
        except RuntimeError as error:
            if "injected" not in str(error):
                probes.problem(f"unexpected error: {error!r}")
            raise
        finally:
            probes.check_clean("after the middleware")
            probes.end()

    return app


asgi_app = _make_asgi()


# -- WSGI ------------------------------------------------------------------------------

Environ = dict[str, Any]


class _File:
    """A file to send whose reads and fileno calls are recorded."""

    def __init__(self, request_id: int) -> None:
        self._id = request_id
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._file.write(f"{request_id:06d}|".encode() * 1000)
        self._file.seek(0)

    def read(self, *args: Any) -> bytes:
        probes.reads.append("read")
        return self._file.read(*args)

    def fileno(self) -> int:
        probes.reads.append("fileno")
        return self._file.fileno()

    def seek(self, *args: Any) -> int:
        return self._file.seek(*args)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        probes.check(self._id, "closing the file", ["environ", "request"])
        self._file.close()


def _wsgi_handler(environ: Environ, start_response: Callable[..., Any]) -> Any:
    request = xcurrent.request
    request_id = request.id
    if sorted(dir(xcurrent)) != ["environ", "request"]:
        probes.problem(f"{request_id} at start: bound {dir(xcurrent)}")
    if list(local):
        probes.problem(f"{request_id} at start: Local holds {list(local)}")
    local.value = Value("local", request_id)
    path = environ["PATH_INFO"]
    if path == "/file":
        start_response("200 OK", [("Content-Length", "7000")])
        return environ["wsgi.file_wrapper"](_File(request_id), 4096)
    if request.args.get("auth") == "1":
        binding = xcurrent(user=Value("user", request_id))
        names = ["environ", "request", "user"]
    else:
        binding, names = None, ["environ", "request"]
    if path == "/stream":
        start_response("200 OK", [])
        return _stream(request_id, binding, names)
    with binding or contextlib.nullcontext():
        probes.check(request_id, "in the app", names)
        body = f"{request_id:06d}|{xcurrent.request.id:06d}|{local.value.id:06d}"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body.encode()]


def _stream(request_id: int, binding: Any, names: list[str]) -> Iterator[bytes]:
    args = xcurrent.request.args
    if binding is not None:
        with binding:
            yield from _chunks(request_id, args, names)
    else:
        yield from _chunks(request_id, args, names)


def _chunks(request_id: int, args: dict[str, str], names: list[str]) -> Iterator[bytes]:
    chunks = int(args.get("chunks", 3))
    if args.get("hang"):
        chunks = 10_000  # until writing to the departed client fails
    for chunk in range(chunks):
        probes.check(request_id, f"chunk {chunk}", names)
        yield f"{xcurrent.request.id:06d}|".encode() * (1000 if args.get("hang") else 1)
        if args.get("fail"):
            raise RuntimeError(f"injected failure in request {request_id}")


def _make_wsgi() -> Any:
    from xlocal.wsgi import XlocalMiddleware  # noqa: PLC0415

    inner = XlocalMiddleware(
        _wsgi_handler,
        xcurrent,
        factories={"request": lambda environ: Request(environ["QUERY_STRING"])},
        locals=[local],
    )

    def app(environ: Environ, start_response: Callable[..., Any]) -> Any:
        if environ["PATH_INFO"] == "/stats":
            expect = int(parse_qs(environ["QUERY_STRING"])["expect"][0])
            body = probes.stats(expect)
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        probes.check_clean("before the middleware")
        try:
            response = inner(environ, start_response)
        except BaseException:
            probes.end()
            raise
        probes.check_clean("after the middleware")
        return _Ending(response)

    return app


class _Ending:
    """The middleware's response; counts the request as ended once it is closed.

    A response that is a ``wsgi.file_wrapper`` is handed on as it is (the server sends
    it with sendfile only then), with its ``close`` counted.
    """

    def __new__(cls, response: Any) -> Any:
        wrapper = type(response)
        if wrapper.__name__ == "FileWrapper":
            close = response.close

            def closing() -> None:
                try:
                    close()
                finally:
                    probes.check_clean("after close")
                    probes.end()

            response.close = closing
            return response
        self = super().__new__(cls)
        self._response = response
        return self

    _response: Any

    def __iter__(self) -> Iterator[bytes]:
        yield from self._response

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            probes.check_clean("after close")
            probes.end()


wsgi_app = _make_wsgi()


def serve_gevent(fd: int) -> None:
    """Serve the WSGI app with gevent.pywsgi on the listening socket *fd*."""
    import signal  # noqa: PLC0415
    import socket  # noqa: PLC0415 - patched by gevent

    import gevent  # noqa: PLC0415
    from gevent.pywsgi import WSGIServer  # noqa: PLC0415

    listener = socket.socket(fileno=fd)
    server = WSGIServer(listener, wsgi_app, log=None, error_log=sys.stderr)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    server.serve_forever()


if __name__ == "__main__":
    serve_gevent(int(sys.argv[1]))
    os._exit(0)
