"""What the ASGI middleware does for each request beyond its with-block.

A clean start on its xlocal and stores whatever context it is handed, and the server's
``send`` and ``receive`` run outside the request's bindings.  The real servers that
need it are in test_servers.py; these tests reproduce what they do, in-process.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from collections.abc import MutableMapping
from typing import Any

import pytest

from xlocal import xlocal
from xlocal._request import clean_start, end_clean, outside
from xlocal.asgi import XlocalMiddleware
from xlocal.local import Local
from xlocal.wsgi import XlocalMiddleware as WSGIMiddleware

Message = MutableMapping[str, Any]


class Value:
    """A request value, to be watched by weak reference."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_pipelined_request_started_inside_send_starts_clean(xcurrent: xlocal) -> None:
    """A request whose task the previous request's send() made sees nothing of it."""
    local = Local()
    seen: list[Any] = []
    started: list[asyncio.Task[None]] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        seen.append((sorted(dir(xcurrent)), list(local)))
        local.value = scope["path"]
        if scope["path"] == "/first":
            with xcurrent(user="ann"):
                await send({"type": "http.response.body", "body": b""})

    wrapped = XlocalMiddleware(app, xcurrent, locals=[local])

    async def send(message: Message) -> None:
        # as uvicorn does with a pipelined request: start it from inside send()
        if not started:
            started.append(asyncio.ensure_future(wrapped(_http("/second"), _rx, send)))

    async def main() -> None:
        await wrapped(_http("/first"), _rx, send)
        await asyncio.wait_for(started[0], 10)

    asyncio.run(main())
    assert seen == [(["scope"], []), (["scope"], [])]


def test_handed_bindings_are_hidden_then_restored(xcurrent: xlocal) -> None:
    """Bindings the request is handed are hidden from it and back after it."""
    seen: list[Any] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        seen.append(dir(xcurrent))

    async def main() -> None:
        with xcurrent(user="ann"):
            await XlocalMiddleware(app, xcurrent, scope=None)(_http("/"), _rx, _tx)
            seen.append(dir(xcurrent))

    asyncio.run(main())
    assert seen == [[], ["user"]]


def test_what_send_schedules_keeps_no_request_value(xcurrent: xlocal) -> None:
    """A timer armed in send(), as a keep-alive timer is, holds no request value."""
    refs: list[weakref.ref[Value]] = []
    kept: list[contextvars.Context] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        value = Value("user")
        refs.append(weakref.ref(value))
        with xcurrent(user=value):
            await receive()
            await send({"type": "http.response.body", "body": b""})

    async def send(message: Message) -> None:
        kept.append(contextvars.copy_context())
        await asyncio.sleep(0)

    async def receive() -> Message:
        kept.append(contextvars.copy_context())
        return {"type": "http.request"}

    def request(scope: Any, receive: Any, send: Any) -> Value:
        value = Value("request")
        refs.append(weakref.ref(value))
        return value

    wrapped = XlocalMiddleware(app, xcurrent, factories={"request": request})
    asyncio.run(wrapped(_http("/"), receive, send))
    gc.collect()
    assert len(kept) == 2
    assert [ref() for ref in refs] == [None, None]
    assert all(context.run(dir, xcurrent) == [] for context in kept)


def test_outside_runs_any_awaitable_in_the_given_context(xcurrent: xlocal) -> None:
    """A call that returns a Future, not a coroutine, runs outside too; errors pass."""
    outer = contextvars.copy_context()
    seen: list[Any] = []

    def call(fail: bool) -> asyncio.Future[str]:
        seen.append(dir(xcurrent))
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if fail:
            future.set_exception(ValueError("refused"))
        else:
            future.set_result("done")
        return future

    async def main() -> str:
        detached = outside(call, outer)
        with xcurrent(user="ann"):
            with pytest.raises(ValueError, match=r"^refused$"):
                await detached(True)
            return await detached(False)

    assert asyncio.run(main()) == "done"
    assert seen == [[], []]


def test_end_clean_elsewhere_changes_nothing(xcurrent: xlocal) -> None:
    """Ending a clean start in another context is quietly refused there."""
    token = contextvars.copy_context().run(clean_start, xcurrent)
    with xcurrent(user="ann"):
        end_clean(xcurrent, token)
        assert xcurrent.user == "ann"


async def _rx() -> Message:
    return {"type": "http.request"}


async def _tx(message: Message) -> None:
    pass


def _http(path: str) -> Message:
    return {"type": "http", "path": path}


def test_wsgi_request_starts_clean(xcurrent: xlocal) -> None:
    """A WSGI request sees none of the bindings or Local data of the server's thread."""
    local = Local()
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append((dir(xcurrent), list(local)))
        start_response("200 OK", [])
        return [b""]

    wrapped = WSGIMiddleware(app, xcurrent, locals=[local])
    local.value = "server"
    try:
        with xcurrent(user="ann"):
            wrapped({}, lambda status, headers: None).close()  # type: ignore[attr-defined]
            seen.append((dir(xcurrent), list(local)))
    finally:
        del local.value
    assert seen == [(["environ"], []), (["user"], [("value", "server")])]
