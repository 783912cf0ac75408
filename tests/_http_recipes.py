"""The framework recipes of README.txt's "Across services" section, each run as written.

Run by tests/test_http_recipes.py in a process of its own (Django is configured once
per process).  Each recipe line is read from README.txt and executed where the
framework makes its app; a request signed with the key then sees its caller's
bindings, and a forged one gets a 400.  Prints the results as JSON.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.http import JsonResponse
from django.urls import path
from flask import Flask
from quart import Quart
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from xlocal import xlocal
from xlocal.http import ASGIMiddleware, WSGIMiddleware
from xlocal.portable import inject

try:
    from fastapi import FastAPI
except ImportError:  # CPython only in the test extra (pydantic-core)
    FastAPI = None

README = Path(__file__).parent.parent / "README.txt"
SECRET = b"recipes secret"
request = xlocal("recipes.request", portable={"user"})


def recipes() -> dict[str, str]:
    """The recipe block's parts, by their comment line."""
    text = README.read_text()
    section = text.split("\nAcross services: ``xlocal.http`` and OpenTelemetry\n", 1)[1]
    block = section.split("Recipes, one line each", 1)[1].split("::\n\n", 1)[1]
    lines = re.match(r"((?:    [^\n]*\n|\n)+)", block)
    assert lines is not None
    found: dict[str, str] = {}
    for part in lines.group(1).strip().split("\n\n"):
        title, *code = [line.strip() for line in part.strip().splitlines()]
        found[title.lstrip("# ")] = "\n".join(code)
    return found


def user() -> Any:
    return getattr(request, "user", None)


def wsgi_get(app: Any, headers: dict[str, str]) -> tuple[int, str]:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    status: list[str] = []
    response = app(environ, lambda s, h, e=None: status.append(s))
    try:
        body = b"".join(response).decode()
    finally:
        getattr(response, "close", lambda: None)()
    return int(status[0].split()[0]), body


def asgi_get(app: Any, headers: dict[str, str]) -> tuple[int, str]:
    async def get() -> tuple[int, str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            response = await c.get("/", headers=headers)
            return response.status_code, response.text

    return asyncio.run(get())


def main() -> None:
    found = recipes()
    names = {"WSGIMiddleware": WSGIMiddleware, "ASGIMiddleware": ASGIMiddleware}
    names["SECRET"] = SECRET
    with request(user="ann"):
        signed = inject(key=SECRET)
        forged = inject(key=b"another key")
    apps: dict[str, tuple[Any, Any]] = {}

    flask_app = Flask(__name__)
    flask_app.get("/")(lambda: {"user": user()})
    exec(found["Flask, under gunicorn"], {**names, "app": flask_app})
    apps["Flask"] = (flask_app, wsgi_get)

    async def starlette_view(request: Any) -> JSONResponse:
        return JSONResponse({"user": user()})

    starlette_app = Starlette(routes=[Route("/", starlette_view)])
    exec(
        found["FastAPI or Starlette, under uvicorn or hypercorn"],
        {**names, "app": starlette_app},
    )
    apps["Starlette"] = (starlette_app, asgi_get)
    if FastAPI is not None:
        fastapi_app = FastAPI()
        fastapi_app.get("/")(lambda: {"user": user()})
        exec(
            found["FastAPI or Starlette, under uvicorn or hypercorn"],
            {**names, "app": fastapi_app},
        )
        apps["FastAPI"] = (fastapi_app, asgi_get)

    quart_app = Quart(__name__)
    quart_app.get("/")(quart_view)
    exec(
        found["Quart, under hypercorn (and its request timers off: see Known limits)"],
        {**names, "app": quart_app},
    )
    assert quart_app.config["RESPONSE_TIMEOUT"] is None
    apps["Quart"] = (quart_app, asgi_get)

    settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="t")

    wsgi_line, asgi_line = found["Django, in wsgi.py or asgi.py"].splitlines()
    django: dict[str, Any] = {**names, "get_wsgi_application": get_wsgi_application}
    exec(wsgi_line, django)
    apps["Django (WSGI)"] = (django["application"], wsgi_get)
    django["get_asgi_application"] = get_asgi_application
    exec(asgi_line, django)
    apps["Django (ASGI)"] = (django["application"], asgi_get)

    results = {}
    for name, (app, get) in apps.items():
        results[name] = [get(app, signed), get(app, forged), get(app, {})]
    print(json.dumps({"recipes": sorted(found), "results": results}))


async def quart_view() -> Any:
    return {"user": user()}


def django_view(request: Any) -> Any:
    return JsonResponse({"user": user()})


urlpatterns = [path("", django_view)]


if __name__ == "__main__":
    main()
