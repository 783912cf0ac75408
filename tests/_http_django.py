"""A Django project behind xlocal.http's middleware, WSGI and ASGI, for real servers.

Apart from ``_http_apps.py`` because Django's settings are made once per process: only
the servers of tests/test_http_frameworks.py import it.  Routes: ``/`` (JSON of what
the view sees), ``/stream`` (a StreamingHttpResponse of a generator, each chunk what
it sees while it is made), ``/astream`` (the same of an async generator, for ASGI).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

settings.configure(
    DEBUG=False,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="test",
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)

import django  # noqa: E402

django.setup()

from _http_apps import KEY, alines, lines, seen, with_stats_asgi, with_stats_wsgi  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from xlocal.http import ASGIMiddleware, WSGIMiddleware  # noqa: E402


def index(_: Any) -> JsonResponse:
    return JsonResponse(seen())


def stream(_: Any) -> StreamingHttpResponse:
    return StreamingHttpResponse(lines(), content_type="application/x-ndjson")


def astream(_: Any) -> StreamingHttpResponse:
    return StreamingHttpResponse(alines(), content_type="application/x-ndjson")


urlpatterns = [path("", index), path("stream", stream), path("astream", astream)]

wsgi = with_stats_wsgi(WSGIMiddleware(get_wsgi_application(), key=KEY))
asgi = with_stats_asgi(ASGIMiddleware(get_asgi_application(), key=KEY))
