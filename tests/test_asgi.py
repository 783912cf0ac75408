"""The ASGI middleware: bindings per request, in-process and under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn
from raised import every_error
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, TextMessage
from wsproto.events import Request as WSRequest

from xlocal import xlocal
from xlocal.asgi import XlocalMiddleware
from xlocal.local import Local, LocalStack, proxy

Message = MutableMapping[str, Any]
TIMEOUT = 20.0

#: Concurrent connections in the end-to-end test; each sends two requests.
CONNECTIONS = 200


class _Req:
    """A request object made from (scope, receive, send)."""

    def __init__(self, scope: Message, receive: Any, send: Any) -> None:
        self.id = int(parse_qs(scope["query_string"].decode())["id"][0])
        self.receive = receive


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _collector() -> tuple[list[Message], Callable[[Message], Awaitable[None]]]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    return sent, send


def _scope(kind: str = "http", request_id: int = 1) -> Message:
    return {"type": kind, "query_string": f"id={request_id}".encode(), "path": "/"}


def test_binds_scope_and_factories(xcurrent: xlocal) -> None:
    """The scope and the factory's object are bound while the app runs, then gone."""
    seen: list[Any] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        seen.append((xcurrent.scope is scope, xcurrent.request.id))
        seen.append(xcurrent.request.receive is receive)

    wrapped = XlocalMiddleware(app, xcurrent, factories={"request": _Req})
    for kind in ("http", "websocket"):
        asyncio.run(wrapped(_scope(kind, 7), _receive, _collector()[1]))
    assert seen == [(True, 7), True, (True, 7), True]


def test_lifespan_passes_through_unbound(xcurrent: xlocal) -> None:
    """Scopes other than http and websocket reach the app with nothing bound."""
    seen: list[Any] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        seen.append(dir(xcurrent))

    wrapped = XlocalMiddleware(app, xcurrent, factories={"request": _Req})
    asyncio.run(wrapped({"type": "lifespan"}, _receive, _collector()[1]))
    assert seen == [[]]


def test_error_exits_and_releases(xcurrent: xlocal) -> None:
    """If the app raises, the binding ends, the locals are released, the error kept."""
    local = Local()
    stack: LocalStack[int] = LocalStack()
    after: list[Any] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        local.value = 1
        stack.push(2)
        raise LookupError("boom")

    wrapped = XlocalMiddleware(app, xcurrent, locals=[local, stack])

    async def main() -> None:
        with pytest.raises(LookupError, match=r"^boom$"):
            await wrapped(_scope(), _receive, _collector()[1])
        after.append((dir(xcurrent), list(local), stack.top))

    asyncio.run(main())
    assert after == [([], [], None)]


def test_every_release_error_is_raised_after_the_apps(xcurrent: xlocal) -> None:
    """When several stores fail to release after a request, each is tried and every
    error is raised together; when the app raised too, its error comes first."""
    released: list[str] = []
    armed: list[bool] = []

    class Failing:
        def __init__(self, name: str) -> None:
            self.name = name

        def __release_local__(self) -> None:
            released.append(self.name)
            if armed:
                raise OSError(f"{self.name} failed")

    async def app(scope: Message, receive: Any, send: Any) -> None:
        armed.append(True)
        if scope.get("fail"):
            raise LookupError("app failed")

    stores = [Failing("first"), Failing("second")]
    wrapped = XlocalMiddleware(app, xcurrent, locals=stores)  # type: ignore[arg-type]
    with pytest.raises(BaseException) as raised:
        asyncio.run(wrapped(_scope(), _receive, _collector()[1]))
    assert every_error(raised.value) == [
        "OSError: first failed",
        "OSError: second failed",
    ]
    assert released == ["first", "second", "first", "second"]
    armed.clear()
    with pytest.raises(BaseException) as raised:
        asyncio.run(wrapped({**_scope(), "fail": True}, _receive, _collector()[1]))
    assert every_error(raised.value) == [
        "LookupError: app failed",
        "OSError: first failed",
        "OSError: second failed",
    ]
    armed.clear()
    one = XlocalMiddleware(app, xcurrent, locals=stores[1:])  # type: ignore[arg-type]
    with pytest.raises(BaseException) as raised:
        asyncio.run(one({**_scope(), "fail": True}, _receive, _collector()[1]))
    assert every_error(raised.value) == [
        "LookupError: app failed",
        "OSError: second failed",
    ]


def test_concurrent_requests_on_one_loop(xcurrent: xlocal) -> None:
    """Requests interleaved on one event loop each see only their own values."""
    local = Local()
    request = proxy(xcurrent, "request")
    results: dict[int, Any] = {}

    async def main() -> None:
        arrived = asyncio.Event()
        count = 0

        async def app(scope: Message, receive: Any, send: Any) -> None:
            nonlocal count
            local.id = xcurrent.request.id
            count += 1
            if count == 10:
                arrived.set()
            await asyncio.wait_for(arrived.wait(), TIMEOUT)
            spawned = asyncio.ensure_future(_read_later(xcurrent))
            results[request.id] = (local.id, xcurrent.request.id, await spawned)

        wrapped = XlocalMiddleware(app, xcurrent, factories={"request": _Req})
        await asyncio.gather(
            *(wrapped(_scope("http", i), _receive, _collector()[1]) for i in range(10))
        )
        assert dir(xcurrent) == []
        assert list(local) == []

    asyncio.run(main())
    assert results == {i: (i, i, i) for i in range(10)}


async def _read_later(x: xlocal) -> int:
    """A task spawned by a request: it sees the request's binding in its snapshot."""
    await asyncio.sleep(0)
    request_id: int = x.request.id
    return request_id


def test_misuse_messages(xcurrent: xlocal) -> None:
    """Wrong arguments are refused when the middleware is made."""

    async def app(scope: Message, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(
        TypeError, match=r"^XlocalMiddleware binds on an xlocal, not on a Local$"
    ):
        XlocalMiddleware(app, Local())  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"^cannot bind 'scope' twice: it is both the scope's name and a "
        r"factory's$",
    ):
        XlocalMiddleware(app, xcurrent, factories={"scope": _Req})
    with pytest.raises(ValueError, match=r"^cannot bind '1x' on <xlocal 'xcurrent'>"):
        XlocalMiddleware(app, xcurrent, scope="1x")
    assert repr(XlocalMiddleware(app, xcurrent)).startswith("<XlocalMiddleware <func")


def test_arguments_checked_when_built(xcurrent: xlocal) -> None:
    """Bad apps, factories and locals are refused when the middleware is made."""

    async def app(scope: Message, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(
        TypeError,
        match=r"^XlocalMiddleware\(app=\.\.\.\) takes the ASGI application to wrap, a "
        r"callable, not str$",
    ):
        XlocalMiddleware("app", xcurrent)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^XlocalMiddleware\(factories=\.\.\.\): the factory for 'request' is "
        r"str, not a callable; give a callable that makes the value from the scope$",
    ):
        XlocalMiddleware(app, xcurrent, factories={"request": "Request"})  # type: ignore[dict-item]
    with pytest.raises(
        TypeError,
        match=r"^XlocalMiddleware\(scope=\.\.\.\) takes the name to bind the scope "
        r"under, or None, not bytes$",
    ):
        XlocalMiddleware(app, xcurrent, scope=b"scope")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^XlocalMiddleware\(locals=\.\.\.\) takes Local, LocalStack and "
        r"LocalManager objects, not int$",
    ):
        XlocalMiddleware(app, xcurrent, locals=[3])  # type: ignore[list-item]


def test_single_local_is_released(xcurrent: xlocal) -> None:
    """locals= takes one Local as well as a list, and releases it in the request."""
    local = Local()
    seen: list[Any] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        local.value = 1

    async def request() -> None:
        await XlocalMiddleware(app, xcurrent, locals=local)(_scope(), _receive, send)
        seen.append(list(local))

    _, send = _collector()
    asyncio.run(request())
    assert seen == [[]]


def test_failing_factory_still_releases(xcurrent: xlocal) -> None:
    """If a factory fails, what the factories stored in the locals is released."""
    local = Local()

    def remember(scope: Message, receive: Any, send: Any) -> str:
        local.value = "stored by a factory"
        return "remembered"

    def fail(scope: Message, receive: Any, send: Any) -> None:
        raise LookupError("no user")

    async def app(scope: Message, receive: Any, send: Any) -> None:
        raise AssertionError("not reached")

    middleware = XlocalMiddleware(
        app, xcurrent, factories={"a": remember, "b": fail}, locals=[local]
    )

    async def request() -> list[Any]:
        # Awaited in this task, as test clients do: the task outlives the request.
        with pytest.raises(LookupError, match=r"^no user$"):
            await middleware(_scope(), _receive, _collector()[1])
        return list(local)

    assert asyncio.run(request()) == []


# -- End to end, under uvicorn ------------------------------------------------------


class _Server:
    """An ASGI app that reads the request after yielding, with probes around it."""

    def __init__(self, x: xlocal, expected: int) -> None:
        self.x = x
        self.expected = expected
        self.local = Local()
        self.request = proxy(x, "request")
        self.problems: list[str] = []
        self.done = 0
        self.all_done = asyncio.Event()
        self.arrived = {"app": 0, "body": 0, "websocket": 0}
        self.gates = {name: asyncio.Event() for name in self.arrived}
        self.app = XlocalMiddleware(
            self.handler, x, factories={"request": _Req}, locals=[self.local]
        )

    async def gate(self, name: str) -> None:
        """Wait until every gated request has reached this point."""
        self.arrived[name] += 1
        if self.arrived[name] >= CONNECTIONS:
            self.gates[name].set()
        await asyncio.wait_for(self.gates[name].wait(), TIMEOUT)

    async def handler(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self.websocket(receive, send)
            return
        x, local = self.x, self.local
        request_id = x.request.id
        local.request_id = request_id
        gated = request_id < CONNECTIONS
        if gated:
            await self.gate("app")
        seen = f"{x.request.id:06d}|{local.request_id:06d}|{self.request.id:06d}"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"35")],
            }
        )
        await send(
            {"type": "http.response.body", "body": seen.encode(), "more_body": True}
        )
        if gated:
            await self.gate("body")
        rest = f"|{x.request.id:06d}|{local.request_id:06d}|"
        await send({"type": "http.response.body", "body": rest.encode()})

    async def websocket(self, receive: Any, send: Any) -> None:
        """Accept, wait for all others, then answer with what the xlocal holds."""
        x, local = self.x, self.local
        local.request_id = x.request.id
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await self.gate("websocket")
        message = await receive()
        seen = f"{x.request.id:06d}|{local.request_id:06d}|{self.request.id:06d}"
        await send({"type": "websocket.send", "text": f"{seen}|{message['text']}"})
        assert (await receive())["type"] == "websocket.disconnect"

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        if scope["path"] == "/stats":
            await asyncio.wait_for(self.all_done.wait(), TIMEOUT)
            body = json.dumps({"done": self.done, "problems": self.problems}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        self.check_clean("before the app")
        try:
            await self.app(scope, receive, send)
        finally:
            self.check_clean("after the app")
            self.done += 1
            if self.done >= self.expected:
                self.all_done.set()

    def check_clean(self, when: str) -> None:
        if dir(self.x) or list(self.local):
            self.problems.append(f"{when}: {self.x!r} {list(self.local)!r}")


@contextlib.asynccontextmanager
async def _uvicorn(app: Any) -> AsyncIterator[int]:
    """Serve *app* with uvicorn on a free loopback port, in this event loop."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4 * CONNECTIONS)
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, ws="wsproto"
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[listener]))
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, TIMEOUT)
        listener.close()


def test_uvicorn_end_to_end(xcurrent: xlocal, http: Any) -> None:
    """Under uvicorn, 400 requests on one event loop each see their own values."""

    async def main() -> tuple[list[list[tuple[int, bytes]]], dict[str, Any]]:
        app = _Server(xcurrent, 2 * CONNECTIONS)
        async with _uvicorn(app) as port:
            connections = [
                [f"/?id={i}", f"/?id={CONNECTIONS + i}"] for i in range(CONNECTIONS)
            ]
            results = await http.get_all_async(port, connections)
            [[(status, body)]] = await http.get_all_async(port, [["/stats"]])
            assert status == 200
            return results, json.loads(body)

    results, stats = asyncio.run(main())
    for i, exchange in enumerate(results):
        for request_id, (status, body) in zip((i, CONNECTIONS + i), exchange):
            assert status == 200
            own = f"{request_id:06d}"
            assert body.decode() == f"{own}|{own}|{own}|{own}|{own}|"
    assert stats == {"done": 2 * CONNECTIONS, "problems": []}


async def _websocket(port: int, request_id: int) -> str | None:
    """Connect, send our id, and return the server's one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = WSConnection(ConnectionType.CLIENT)
    writer.write(connection.send(WSRequest(host="test", target=f"/?id={request_id}")))
    answer: str | None = None
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
            connection.receive_data(data or None)
            for event in connection.events():
                if isinstance(event, AcceptConnection):
                    writer.write(connection.send(TextMessage(f"{request_id:06d}")))
                elif isinstance(event, TextMessage):
                    answer = (answer or "") + event.data
                    if event.message_finished:
                        writer.write(connection.send(CloseConnection(code=1000)))
                elif isinstance(event, CloseConnection):
                    return answer
            if not data:
                return answer
            await writer.drain()
    finally:
        writer.close()


def test_uvicorn_websockets_end_to_end(xcurrent: xlocal, http: Any) -> None:
    """Under uvicorn, 200 concurrent websockets each see their own values."""

    async def main() -> tuple[list[str | None], dict[str, Any]]:
        app = _Server(xcurrent, CONNECTIONS)
        async with _uvicorn(app) as port:
            answers = await asyncio.gather(
                *(_websocket(port, i) for i in range(CONNECTIONS))
            )
            [[(status, body)]] = await http.get_all_async(port, [["/stats"]])
            assert status == 200
            return list(answers), json.loads(body)

    answers, stats = asyncio.run(main())
    assert answers == [f"{i:06d}|{i:06d}|{i:06d}|{i:06d}" for i in range(CONNECTIONS)]
    assert stats == {"done": CONNECTIONS, "problems": []}


def test_unbound_message_says_where_the_middleware_binds(xcurrent: xlocal) -> None:
    """Once a middleware serves an xlocal, reading one of its names outside a request
    (as a framework's error handler does) says what to check."""
    XlocalMiddleware(lambda scope, receive, send: None, xcurrent)  # type: ignore[arg-type,return-value]
    with pytest.raises(AttributeError) as error:
        xcurrent.user  # noqa: B018
    assert str(error.value) == (
        "'user' is not bound on <xlocal 'xcurrent'> in this execution: bind it with "
        "`with xcurrent(user=...)`. It is bound for each request by the ASGI "
        "XlocalMiddleware: code that runs outside the middleware sees nothing bound, "
        "such as an error handler a framework installs outside it (Starlette and "
        "FastAPI run the handler of Exception outside user middleware); wrap the whole "
        "application with the middleware instead"
    )
