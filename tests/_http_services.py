"""Three real services that pass portable bindings along over HTTP (xlocal.http).

Each runs in its own process, under a real server (see ``test_http_services.py``):

- ``service_a``: a Flask app, served by gunicorn's gthread worker, in
  ``xlocal.http.WSGIMiddleware``.  ``/chain?client=requests|httpx&then=httpx|aiohttp``
  calls B's ``/chain?client=<then>`` with an installed ``requests.Session`` or
  ``httpx.Client``.
- ``service_b``: a FastAPI app (Starlette where FastAPI is not installed), served by
  uvicorn, in ``xlocal.http.ASGIMiddleware``.  ``/chain?client=httpx|aiohttp`` calls
  C's ``/seen`` with an installed ``httpx.AsyncClient`` or an ``aiohttp.ClientSession``
  with xlocal's trace config; it sends ``tenant`` as W3C baggage too.
- ``service_c``: a plain WSGI app, served by gunicorn's gevent worker, in
  ``xlocal.http.WSGIMiddleware`` with ``on_invalid="ignore"`` and ``baggage=``.

Every service answers ``/seen`` (what the request sees bound) and ``/alive`` (served
outside the middleware: once no other request is in flight, the number of request
values still alive after a garbage collection, and what was found bound outside the
requests).  A hop's answer holds what it saw before and after calling the next hop, and
the next hop's answer.  ``SVC_NEXT`` in the environment is the next hop's URL.

The keys are being rotated from ``KEY_OLD`` to ``KEY_NEW``: A accepts both and signs
with the new one, B accepts only the new one and still signs with the old one, C
accepts both.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from xlocal import xlocal

TIMEOUT = 30.0

KEY_OLD = b"old shared secret of the svc tests"
KEY_NEW = b"new shared secret of the svc tests"
#: A key no service knows: what a forger signs with.
KEY_FORGED = b"a key the services do not know"

A_VERIFIES = (KEY_NEW, KEY_OLD)
A_SIGNS = (KEY_NEW, KEY_OLD)
B_VERIFIES = KEY_NEW
B_SIGNS = [KEY_OLD, KEY_NEW]
C_VERIFIES = [KEY_NEW, KEY_OLD]
#: The largest carrier A reads (B and C read the default MAX_CARRIER_SIZE).
A_LIMIT = 3000


class Token:
    """A portable value decoded into an object, so that its life can be watched."""

    def __init__(self, text: str) -> None:
        self.text = text
        alive.add(self)

    def __repr__(self) -> str:
        return f"Token({self.text!r})"


#: Every Token this process made, while alive.
alive: weakref.WeakSet[Token] = weakref.WeakSet()


class TokenCodec:
    """Encodes a Token as its text; decoding makes a new Token."""

    def encode(self, value: Token) -> str:
        return value.text

    def decode(self, text: str) -> Token:
        return Token(text)


#: What a request carries: user and tenant (JSON), and a token (its own codec).
svc = xlocal("svc.request", portable={"user", "tenant"})
trace = xlocal("svc.trace", portable={"token"}, codec=TokenCodec())


def seen() -> dict[str, Any]:
    """Everything bound on the two xlocals, the token as its text."""
    found = {name: getattr(svc, name) for name in dir(svc)}
    if "token" in dir(trace):
        found["token"] = trace.token.text
    extra = sorted(set(dir(trace)) - {"token"})
    if extra:
        found["trace extra"] = extra
    return found


@functools.cache
def _log_refusals() -> None:
    """xlocal.http's warnings, one line each, into the server's output.  Called where
    a server makes its service, never on import: the test process imports this module
    too, and its own tests read those warnings through pytest's root handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("xlocal.http")
    logger.addHandler(handler)
    logger.propagate = False


class Tracker:
    """Requests in flight, and what was found bound outside any request."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.problems: list[str] = []
        self.changed = threading.Condition()

    def check_clean(self, where: str) -> None:
        if dir(svc) or dir(trace):
            self.problems.append(f"{where}: bound {seen()}")

    def start(self) -> None:
        self.check_clean("before the middleware")
        with self.changed:
            self.in_flight += 1

    def end(self) -> None:
        self.check_clean("after the middleware")
        with self.changed:
            self.in_flight -= 1
            self.changed.notify_all()

    def report(self) -> bytes:
        # Three passes: PyPy frees what a finalizer kept reachable only on a later one.
        for _ in range(3):
            gc.collect()
        return json.dumps(
            {
                "alive": sorted(token.text for token in alive),
                "in_flight": self.in_flight,
                "problems": self.problems[:20],
            }
        ).encode()

    def wait_idle(self) -> bytes:
        with self.changed:
            self.changed.wait_for(lambda: self.in_flight == 0, TIMEOUT)
        return self.report()


tracker = Tracker()


def _json(start_response: Callable[..., Any], body: bytes) -> list[bytes]:
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _tracked_wsgi(app: Callable[..., Any]) -> Callable[..., Any]:
    """*app*, with ``/alive`` served outside it and its requests tracked."""

    def tracked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ["PATH_INFO"] == "/alive":
            return _json(start_response, tracker.wait_idle())
        tracker.start()
        try:
            response = app(environ, start_response)
        except BaseException:  # pragma: no cover - the middleware answers errors
            tracker.end()
            raise
        return _Ending(response)

    return tracked


class _Ending:
    """A WSGI response whose close() ends the request's tracking."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        yield from self._response

    def close(self) -> None:
        try:
            close = getattr(self._response, "close", None)
            if close is not None:
                close()
        finally:
            self._response = None
            tracker.end()


# -- A: Flask under gunicorn gthread ---------------------------------------------------


def _make_a() -> Any:
    import flask  # noqa: PLC0415 - each service imports only its own stack
    import httpx  # noqa: PLC0415
    import requests  # noqa: PLC0415
    from requests.adapters import HTTPAdapter  # noqa: PLC0415

    from xlocal.http import WSGIMiddleware, install  # noqa: PLC0415

    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=64))
    clients: dict[str, Any] = {
        "requests": install(session, key=A_SIGNS),
        "httpx": install(
            httpx.Client(timeout=TIMEOUT, limits=httpx.Limits(max_connections=64)),
            key=A_SIGNS,
        ),
    }
    app = flask.Flask("service_a")

    @app.get("/chain")
    def chain() -> Any:
        saw = seen()
        client = clients[flask.request.args.get("client", "requests")]
        then = flask.request.args.get("then", "httpx")
        response = client.get(f"{os.environ['SVC_NEXT']}/chain?client={then}")
        return {
            "service": "A",
            "saw": saw,
            "after": seen(),
            "status": response.status_code,
            "next": response.json(),
        }

    @app.get("/seen")
    def seen_here() -> Any:
        return {"service": "A", "saw": seen()}

    return _tracked_wsgi(WSGIMiddleware(app, key=A_VERIFIES, limit=A_LIMIT))


# -- B: FastAPI (or Starlette) under uvicorn -------------------------------------------


def _make_b() -> Any:
    import asyncio  # noqa: PLC0415

    import aiohttp  # noqa: PLC0415
    import httpx  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import JSONResponse  # noqa: PLC0415

    from xlocal.http import (  # noqa: PLC0415
        ASGIMiddleware,
        aiohttp_trace_config,
        install,
    )

    baggage = {"tenant": svc}
    clients: dict[str, Any] = {}

    def client(name: str) -> Any:
        # Made in the server's loop, at the first request that needs it.
        if name not in clients:
            # No timeouts: a timer armed in a request keeps a copy of its context
            # until its time comes, even once cancelled.  No pooled connections: the
            # reader callback of each keeps a copy of the context of the request that
            # opened it (aiohttp everywhere, httpx from 3.15; README, Known limits).
            # (The tests' own clients have timeouts.)
            if name == "httpx":
                limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
                clients[name] = install(
                    httpx.AsyncClient(timeout=None, limits=limits),
                    key=B_SIGNS,
                    baggage=baggage,
                )
            else:
                config = aiohttp_trace_config(key=B_SIGNS, baggage=baggage)
                clients[name] = aiohttp.ClientSession(
                    trace_configs=[config],
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=None),
                    connector=aiohttp.TCPConnector(force_close=True),
                )
        return clients[name]

    async def chain(request: Request) -> JSONResponse:
        saw = seen()
        name = request.query_params.get("client", "httpx")
        url = f"{os.environ['SVC_NEXT']}/seen"
        await asyncio.sleep(0)  # let the other requests run between the steps
        if name == "httpx":
            response = await client(name).get(url)
            status, body = response.status_code, response.json()
        else:
            async with client(name).get(url) as response:
                status, body = response.status, await response.json()
        return JSONResponse(
            {
                "service": "B",
                "framework": framework,
                "saw": saw,
                "after": seen(),
                "status": status,
                "next": body,
            }
        )

    async def seen_here(request: Request) -> JSONResponse:
        return JSONResponse({"service": "B", "saw": seen()})

    try:
        from fastapi import FastAPI  # noqa: PLC0415
    except ImportError:  # PyPy 3.9: no pydantic-core build, so no FastAPI
        from starlette.applications import Starlette  # noqa: PLC0415
        from starlette.routing import Route  # noqa: PLC0415

        framework = "starlette"
        api: Any = Starlette(routes=[Route("/chain", chain), Route("/seen", seen_here)])
    else:
        framework = "fastapi"
        # The annotations are strings (from __future__) naming what was imported
        # here, where FastAPI cannot look them up: give it the classes.
        for endpoint in (chain, seen_here):
            endpoint.__annotations__ = {"request": Request, "return": JSONResponse}
        api = FastAPI()
        api.add_api_route("/chain", chain)
        api.add_api_route("/seen", seen_here)

    inner = ASGIMiddleware(api, key=B_VERIFIES)
    changed: list[asyncio.Condition] = []

    async def tracked(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        if not changed:
            changed.append(asyncio.Condition())
        if scope["path"] == "/alive":
            async with changed[0]:
                await asyncio.wait_for(
                    changed[0].wait_for(lambda: tracker.in_flight == 0), TIMEOUT
                )
            body = tracker.report()
            headers = [(b"content-type", b"application/json")]
            headers.append((b"content-length", str(len(body)).encode()))
            await send(
                {"type": "http.response.start", "status": 200, "headers": headers}
            )
            await send({"type": "http.response.body", "body": body})
            return
        tracker.start()
        try:
            await inner(scope, receive, send)
        finally:
            tracker.end()
            async with changed[0]:
                changed[0].notify_all()

    return tracked


# -- C: plain WSGI under gunicorn's gevent worker --------------------------------------


def _c_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    report = {"service": "C", "saw": seen(), "baggage": environ.get("HTTP_BAGGAGE")}
    return _json(start_response, json.dumps(report).encode())


def _make_c() -> Any:
    from xlocal.http import WSGIMiddleware  # noqa: PLC0415

    return _tracked_wsgi(
        WSGIMiddleware(
            _c_app, key=C_VERIFIES, on_invalid="ignore", baggage={"tenant": svc}
        )
    )


_MAKERS = {"service_a": _make_a, "service_b": _make_b, "service_c": _make_c}
_made: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """Each service is made when its server asks for it, so that a process imports
    only its own framework and clients."""
    if name not in _MAKERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _made:
        _log_refusals()
        _made[name] = _MAKERS[name]()
    return _made[name]
