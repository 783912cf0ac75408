"""Apps behind xlocal.http's receiving middleware, for tests/test_http_frameworks.py.

Each route answers with what it sees bound on two portable xlocals, as JSON: the view,
each chunk of a streamed response, a websocket.  Served in-process by test clients, or
by gunicorn and uvicorn in subprocesses (see ``_servers.py``); ``_http_django.py`` has
the Django apps, apart, because Django's settings are made once per process.

``trace.token`` decodes to a ``Token``, which is weakly tracked, so that ``/stats``
can report which request values are still alive after a garbage collection.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

from xlocal import xlocal
from xlocal.http import ASGIMiddleware, WSGIMiddleware

#: The secret the tests sign carriers with; OLD_KEY is one being rotated out.
KEY = b"fw26-test-secret-do-not-leak"
OLD_KEY = b"fw26-previous-secret-do-not-leak"

#: Portable names travel; ``secret`` is bound here only, never taken from a carrier.
request = xlocal("http_apps.request", portable={"user", "tenant", "role"})


class Token:
    """A request value the carrier makes (by its codec), tracked while alive."""

    __slots__ = ("__weakref__", "id")

    def __init__(self, token_id: int) -> None:
        self.id = token_id
        alive.add(self)


class TokenCodec:
    """A Token travels as its id."""

    def encode(self, value: Token) -> str:
        return str(value.id)

    def decode(self, text: str) -> Token:
        return Token(int(text))


trace = xlocal("http_apps.trace", portable=True, codec=TokenCodec())

#: Every Token decoded in this process, while alive.
alive: weakref.WeakSet[Token] = weakref.WeakSet()


def seen() -> dict[str, Any]:
    """What is bound here: request's names (str values) and the trace token's id."""
    found: dict[str, Any] = {
        name: getattr(request, name)
        for name in dir(request)
        if isinstance(getattr(request, name), str)
    }
    found.update({f"bound:{name}": True for name in dir(request)})
    if "token" in dir(trace):
        found["token"] = trace.token.id
    return found


def lines(count: int = 3) -> Iterator[bytes]:
    """A streamed body: what is bound while each chunk is made, one JSON line each."""
    for _ in range(count):
        yield json.dumps(seen()).encode() + b"\n"


async def alines(count: int = 3) -> AsyncIterator[bytes]:
    """``lines``, asynchronously, with a switch to other tasks between chunks."""
    for _ in range(count):
        yield json.dumps(seen()).encode() + b"\n"
        await asyncio.sleep(0)


def stats() -> bytes:
    """The Tokens still alive after a garbage collection, as JSON."""
    for _ in range(3):
        gc.collect()
    return json.dumps(sorted(token.id for token in alive)).encode()


class BoomError(Exception):
    """Raised by the apps' /boom routes."""


# -- Flask -----------------------------------------------------------------------------


def make_flask() -> Any:
    """A Flask app: ``/`` (JSON of what it sees), ``/stream``, ``/boom``."""
    import flask  # noqa: PLC0415 - only the WSGI apps need it

    app = flask.Flask("http_apps")

    @app.route("/")
    def index() -> Any:
        return flask.jsonify(seen())

    @app.route("/stream")
    def stream() -> Any:
        return flask.Response(lines(), mimetype="application/x-ndjson")

    @app.route("/boom")
    def boom() -> Any:
        raise BoomError(json.dumps(seen()))

    return app


# -- Starlette and FastAPI -------------------------------------------------------------


def make_starlette() -> Any:
    """A Starlette app: ``/``, ``/stream`` (StreamingResponse), ``/boom``, ``/ws``."""
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.responses import JSONResponse, StreamingResponse  # noqa: PLC0415
    from starlette.routing import Route, WebSocketRoute  # noqa: PLC0415

    async def index(_: Any) -> Any:
        await asyncio.sleep(0)
        return JSONResponse(seen())

    async def stream(_: Any) -> Any:
        return StreamingResponse(alines(), media_type="application/x-ndjson")

    async def boom(_: Any) -> Any:
        raise BoomError(json.dumps(seen()))

    async def socket(websocket: Any) -> None:
        await websocket.accept()
        await websocket.send_json(seen())
        await websocket.receive_text()
        await websocket.send_json(seen())
        await websocket.close()

    return Starlette(
        routes=[
            Route("/", index),
            Route("/stream", stream),
            Route("/boom", boom),
            WebSocketRoute("/ws", socket),
        ]
    )


def make_fastapi() -> Any:
    """The Starlette app's routes, in FastAPI (CPython only in the test extra)."""
    from fastapi import FastAPI, WebSocket  # noqa: PLC0415
    from fastapi.responses import StreamingResponse  # noqa: PLC0415

    app = FastAPI()

    @app.get("/")
    async def index() -> dict[str, Any]:
        await asyncio.sleep(0)
        return seen()

    @app.get("/sync")
    def sync_index() -> dict[str, Any]:  # run in a worker thread
        return seen()

    @app.get("/stream")
    async def stream() -> Any:
        return StreamingResponse(alines(), media_type="application/x-ndjson")

    @app.get("/boom")
    async def boom() -> Any:
        raise BoomError(json.dumps(seen()))

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(seen())
        await websocket.receive_text()
        await websocket.send_json(seen())
        await websocket.close()

    # FastAPI reads the annotation, which this module's postponed annotations make a
    # string naming a class imported here, not in the module
    socket.__annotations__["websocket"] = WebSocket
    app.websocket("/ws")(socket)
    return app


# -- Quart -----------------------------------------------------------------------------


def make_quart() -> Any:
    """A Quart app: ``/``, ``/stream`` (an async generator), ``/boom``, ``/ws``."""
    import quart  # noqa: PLC0415 - only the Quart tests need it

    app = quart.Quart("http_apps")
    # Quart times the body and the response with timers armed inside the request,
    # which keep its values alive until they are due, cancelled or not (README,
    # Known limits): without them, nothing of a request outlives it.
    app.config.update(BODY_TIMEOUT=None, RESPONSE_TIMEOUT=None)

    @app.route("/")
    async def index() -> Any:
        await asyncio.sleep(0)
        return quart.jsonify(seen())

    @app.route("/stream")
    async def stream() -> Any:
        return quart.Response(alines(), mimetype="application/x-ndjson")

    @app.route("/boom")
    async def boom() -> Any:
        raise BoomError(json.dumps(seen()))

    @app.errorhandler(BoomError)
    async def failed(error: BoomError) -> Any:
        # Quart answers a view's error itself: here, with what the view saw.
        return str(error), 500

    @app.websocket("/ws")
    async def socket() -> None:
        await quart.websocket.accept()
        await quart.websocket.send(json.dumps(seen()))
        await quart.websocket.receive()
        await quart.websocket.send(json.dumps(seen()))

    return app


# -- What the real servers serve -------------------------------------------------------


def with_stats_wsgi(app: Any) -> Any:
    """*app*, with ``/stats`` answered outside it."""

    def outer(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/stats":
            body = stats()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)

    return outer


def with_stats_asgi(app: Any) -> Any:
    """*app*, with ``/stats`` answered outside it."""

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/stats":
            body = stats()
            headers = [(b"content-length", str(len(body)).encode())]
            await send(
                {"type": "http.response.start", "status": 200, "headers": headers}
            )
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return outer


flask_served = with_stats_wsgi(WSGIMiddleware(make_flask(), key=KEY))
starlette_served = with_stats_asgi(ASGIMiddleware(make_starlette(), key=KEY))


def quart_served() -> Any:
    """The Quart app as served: made when the server asks for it (hypercorn's
    ``module:factory()``), so that other importers need not import Quart."""
    return with_stats_asgi(ASGIMiddleware(make_quart(), key=KEY))
