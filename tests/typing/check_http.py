"""Types of xlocal.http, checked by ``mypy --strict`` in CI (never executed)."""

from __future__ import annotations

import aiohttp
import httpx
import requests
from typing_extensions import assert_type

import xlocal
from xlocal.http import (
    ASGIMiddleware,
    WSGIMiddleware,
    aiohttp_trace_config,
    headers,
    install,
)
from xlocal.wsgi import WSGIApplication

request = xlocal.xlocal("check.request", portable={"user"})
SECRET = b"secret"


def wsgi_app(environ: dict[str, object], start_response: object) -> list[bytes]:
    return []


app: WSGIApplication = WSGIMiddleware(wsgi_app, key=SECRET)
WSGIMiddleware(wsgi_app, key=[b"new", b"old"], baggage={"user": request})
WSGIMiddleware(wsgi_app, trust_unsigned=True, on_invalid="ignore", unknown="error")
WSGIMiddleware(wsgi_app, key="text")  # type: ignore[arg-type]
WSGIMiddleware(wsgi_app, key=SECRET, on_invalid="drop")  # type: ignore[arg-type]
WSGIMiddleware(wsgi_app, SECRET)  # type: ignore[call-arg]
ASGIMiddleware(ASGIMiddleware(wsgi_app, key=SECRET), key=SECRET)  # type: ignore[arg-type]

assert_type(install(requests.Session(), key=SECRET), requests.Session)
assert_type(install(httpx.Client(), key=(b"new", b"old")), httpx.Client)
assert_type(install(httpx.AsyncClient()), httpx.AsyncClient)
assert_type(install(httpx.Client(), hosts={"orders.internal"}), httpx.Client)
aiohttp_trace_config(hosts=["::1", "10.0.0.7"])
install(requests.Session(), hosts=[b"orders"])  # type: ignore[list-item]
assert_type(headers(key=SECRET), dict[str, str])
assert_type(aiohttp_trace_config(baggage={"user": request}), aiohttp.TraceConfig)
headers(baggage={"user": "request"})  # type: ignore[dict-item]
