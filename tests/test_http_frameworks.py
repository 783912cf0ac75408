"""xlocal.http's receiving middleware behind Flask, Django, Starlette and FastAPI.

A carrier made by ``xlocal.portable.inject(key=...)`` and sent as HTTP headers,
unchanged, is bound for the whole request: in the view, while a streamed response is
made, in a websocket endpoint; a refused one gets a 400 (a websocket: closed before it
is accepted, a 403) and one warning.  In-process first, the middleware alone and then
the frameworks (``_http_apps.py``); then under real gunicorn and uvicorn servers in
subprocesses, Django among them (``_http_django.py``), as test_servers.py serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import logging
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any, Callable, Union

import httpx
import pytest
from _http_apps import (
    KEY,
    OLD_KEY,
    BoomError,
    Token,
    make_fastapi,
    make_flask,
    make_quart,
    make_starlette,
    request,
    seen,
    trace,
)
from _servers import TIMEOUT, Served, pipelines, read_response, serve
from conftest import collect
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    RejectConnection,
    RejectData,
    TextMessage,
)
from wsproto.events import Request as WSRequest

from xlocal import xlocal
from xlocal.asgi import XlocalMiddleware as ASGIXlocalMiddleware
from xlocal.http import ASGIMiddleware, WSGIMiddleware
from xlocal.portable import MAX_CARRIER_SIZE, inject
from xlocal.wsgi import XlocalMiddleware as WSGIXlocalMiddleware

Message = MutableMapping[str, Any]
#: Request headers as sent: names and values (bytes go on the wire as they are).
Headers = Sequence[tuple[str, Union[str, bytes]]]

REFUSED_BODY = b"invalid xlocal carrier\n"
KINDS = ["wsgi", "asgi"]


# -- Carriers --------------------------------------------------------------------------


def carrier(
    key: Any = KEY,
    token: int | None = None,
    limit: int = MAX_CARRIER_SIZE,
    **names: str,
) -> dict[str, str]:
    """The headers ``inject(key=key)`` makes with *names* bound on ``request`` and
    *token* on ``trace``."""
    with contextlib.ExitStack() as stack:
        if names:
            stack.enter_context(request(**names))
        if token is not None:
            stack.enter_context(trace(token=Token(token)))
        return inject(key=key, limit=limit)


def signed(bindings: dict[str, dict[str, str]], key: bytes = KEY) -> dict[str, str]:
    """A carrier of *bindings* (each value as the codec encoded it), signed."""
    text = json.dumps({"b": bindings, "v": 1}, separators=(",", ":"), sort_keys=True)
    return sign_text(text, key)


def sign_text(text: str, key: bytes = KEY) -> dict[str, str]:
    """*text* as the carrier, signed as inject signs (hex HMAC-SHA256)."""
    signature = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return {"xlocal": text, "xlocal-signature": signature}


def _signed_bytes() -> list[tuple[str, str | bytes]]:
    """A carrier with a byte outside ASCII, its signature right for its text as the
    server decodes it (latin-1): refused for the byte, not the signature."""
    text = '{"b":{"http_apps.request":{"user":"\\"\xe9\\""}},"v":1}'
    signature = sign_text(text)["xlocal-signature"]
    return [("xlocal", text.encode("latin-1")), ("xlocal-signature", signature)]


def expect(token: int | None = None, **names: str) -> dict[str, Any]:
    """What ``seen()`` reports with *names* bound on ``request``, and a trace token."""
    found: dict[str, Any] = {**names, **{f"bound:{name}": True for name in names}}
    if token is not None:
        found["token"] = token
    return found


def as_list(headers: dict[str, str] | Headers) -> list[tuple[str, str | bytes]]:
    return list(headers.items() if isinstance(headers, dict) else headers)


# -- The middleware alone, called as servers call it -----------------------------------


def wsgi_environ(headers: Headers, path: str = "/where") -> dict[str, Any]:
    """A WSGI environ with *headers*, joined as WSGI servers join a repeated one."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        field = "HTTP_" + name.upper().replace("-", "_")
        environ[field] = f"{environ[field]}, {text}" if field in environ else text
    return environ


def asgi_scope(headers: Headers, kind: str = "http", path: str = "/where") -> Message:
    """An ASGI scope with *headers*, each as the server received it."""
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 12345),
        "server": ("test", 80),
        "headers": [
            (
                name.lower().encode(),
                value if isinstance(value, bytes) else value.encode("latin-1"),
            )
            for name, value in headers
        ],
    }


class Exchange:
    """One request through a middleware around a probe app, as a server makes it.

    ``status``, ``headers`` and ``body`` are the response; ``views`` what the app saw
    each time it was called (empty: it was not); ``chunks`` what it saw while each
    chunk of its response was made and when it was closed; ``outside`` what the
    server's send and receive (ASGI) saw.
    """

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.views: list[dict[str, Any]] = []
        self.chunks: list[dict[str, Any]] = []
        self.outside: list[dict[str, Any]] = []

    def wsgi_app(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.views.append(seen())
        start_response("200 OK", [("Content-Type", "application/json")])

        def body() -> Iterator[bytes]:
            try:
                for _ in range(2):
                    self.chunks.append(seen())
                    yield json.dumps(seen()).encode()
            finally:
                self.chunks.append(seen())

        return body()

    async def asgi_app(self, scope: Message, receive: Any, send: Any) -> None:
        self.views.append(seen())
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(2):
            self.chunks.append(seen())
            body = json.dumps(seen()).encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def run_wsgi(self, middleware: Any, headers: Headers) -> Exchange:
        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            self.status = int(status.split(maxsplit=1)[0])
            self.headers = {name.lower(): value for name, value in headers}
            return lambda data: None

        response = middleware(wsgi_environ(headers), start_response)
        try:
            self.body = b"".join(response)
        finally:
            getattr(response, "close", lambda: None)()
        return self

    def run_asgi(self, middleware: Any, headers: Headers) -> Exchange:
        async def receive() -> Message:
            self.outside.append(seen())
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            self.outside.append(seen())
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.headers = {
                    name.decode("latin-1").lower(): value.decode("latin-1")
                    for name, value in message.get("headers", [])
                }
            else:
                self.body += message.get("body", b"")

        asyncio.run(middleware(asgi_scope(headers), receive, send))
        return self


def exchange(kind: str, headers: dict[str, str] | Headers, **options: Any) -> Exchange:
    """GET /where with *headers* through *kind*'s middleware made with *options*."""
    done = Exchange()
    if kind == "wsgi":
        done.run_wsgi(WSGIMiddleware(done.wsgi_app, **options), as_list(headers))
    else:
        done.run_asgi(ASGIMiddleware(done.asgi_app, **options), as_list(headers))
    # nothing from the headers is left where the server called the middleware
    assert dir(request) == []
    assert dir(trace) == []
    return done


def bound(done: Exchange, expected: dict[str, Any]) -> None:
    """The app ran once and saw *expected* throughout; the server saw nothing."""
    assert done.status == 200, done.body
    assert done.views == [expected]
    assert done.chunks
    assert all(chunk == expected for chunk in done.chunks)
    assert done.outside == [{}] * len(done.outside)


def refused(done: Exchange) -> None:
    """The 400 that a refused carrier gets, with nothing secret in it."""
    assert done.status == 400
    assert done.views == []
    assert done.body == REFUSED_BODY
    assert done.headers["content-type"] == "text/plain; charset=utf-8"
    assert KEY.decode() not in repr(done.headers)


@pytest.fixture(autouse=True)
def _warnings_reach_caplog(caplog: pytest.LogCaptureFixture) -> None:
    """xlocal.http's warnings are captured whatever level other tests left the root
    logger at (an in-process Celery worker sets it to ERROR)."""
    caplog.set_level(logging.WARNING, logger="xlocal.http")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages of the warnings logged on "xlocal.http"."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "xlocal.http" and record.levelno == logging.WARNING
    ]


def one_warning(caplog: pytest.LogCaptureFixture) -> str:
    """The one warning logged on "xlocal.http", which names the request, no secret."""
    [message] = warnings(caplog)
    assert "GET" in message
    assert "/where" in message
    assert "cannot extract bindings from the carrier" in message  # why
    assert KEY.decode() not in message
    assert OLD_KEY.decode() not in message
    caplog.clear()
    return message


@pytest.mark.parametrize("kind", KINDS)
def test_signed_carrier_binds_for_the_whole_request(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """In the app, in every chunk, at close; not in the server's send and receive."""
    caplog.set_level(logging.DEBUG)
    headers = carrier(user="ann", tenant="acme", token=7)
    bound(exchange(kind, headers, key=KEY), expect(user="ann", tenant="acme", token=7))
    assert warnings(caplog) == []


@pytest.mark.parametrize("kind", KINDS)
def test_request_without_carrier_binds_nothing(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No carrier header is no error: the app runs with nothing bound."""
    caplog.set_level(logging.DEBUG)
    bound(exchange(kind, {"other": "x"}, key=KEY), {})
    # a carrier of nothing bound, signed: fine too
    bound(exchange(kind, carrier(), key=KEY), {})
    assert warnings(caplog) == []


@pytest.mark.parametrize("kind", KINDS)
def test_keys_rotate(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """With a list of keys, the carrier signed with any of them is believed."""
    for signer in (KEY, OLD_KEY):
        done = exchange(kind, carrier(key=signer, user="ann"), key=[KEY, OLD_KEY])
        bound(done, expect(user="ann"))
    assert warnings(caplog) == []
    refused(exchange(kind, carrier(key=OLD_KEY, user="ann"), key=[KEY]))
    assert "signature" in one_warning(caplog)
    refused(exchange(kind, carrier(key=b"another", user="ann"), key=[KEY, OLD_KEY]))
    one_warning(caplog)


@pytest.mark.parametrize("kind", KINDS)
def test_trust_unsigned(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """trust_unsigned=True believes an unsigned carrier; key= refuses it."""
    unsigned = carrier(key=None, user="ann")
    assert "xlocal-signature" not in unsigned
    bound(exchange(kind, unsigned, trust_unsigned=True), expect(user="ann"))
    assert warnings(caplog) == []
    refused(exchange(kind, unsigned, key=KEY))
    one_warning(caplog)


#: Carriers refused, each with what the warning says of why.
INVALID = {
    "forged": (carrier(key=b"forger", user="root"), "signature"),
    "changed": (
        {**carrier(user="ann"), "xlocal": carrier(user="root")["xlocal"]},
        "signature",
    ),
    "unsigned": (carrier(key=None, user="root"), "signature is missing"),
    "value": (signed({"http_apps.request": {"user": "not json"}}), "decoded"),
    "malformed": (sign_text("{"), "not valid JSON"),
    "version": (sign_text('{"b":{},"v":2}'), "version"),
    "latin-1": (
        [("xlocal", '{"b":{},"v":1}\xe9'), ("xlocal-signature", "0")],
        "signature",
    ),
    "bytes": (
        [("xlocal", carrier(user="ann")["xlocal"].encode() + b"\xff\xfe")],
        "signature",
    ),
    "signed-bytes": (_signed_bytes(), "printable ASCII"),
    "enormous": ({"xlocal": "x" * 1_000_000, "xlocal-signature": "0"}, "limit"),
    # a WSGI server joins the two (the signature no longer matches); ASGI sees both
    "twice": ([*carrier(user="ann").items()] * 2, ""),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", INVALID)
def test_invalid_carrier_is_refused(
    kind: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """400 with a fixed body and one warning that says why; the app never runs."""
    headers, why = INVALID[case]
    refused(exchange(kind, headers, key=KEY))
    assert why in one_warning(caplog)


@pytest.mark.parametrize("kind", KINDS)
def test_on_invalid_ignore(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """on_invalid="ignore": the app runs with nothing bound, after one warning."""
    forged = carrier(key=b"forger", user="root")
    bound(exchange(kind, forged, key=KEY, on_invalid="ignore"), {})
    one_warning(caplog)
    done = exchange(kind, forged, key=KEY, on_invalid="reject")
    refused(done)
    one_warning(caplog)


@pytest.mark.parametrize("kind", KINDS)
def test_signature_without_carrier(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """A signature header alone carries nothing: the request runs, nothing bound, as
    a request without the carrier does."""
    lone = {"xlocal-signature": carrier(user="ann")["xlocal-signature"]}
    bound(exchange(kind, lone, key=KEY), {})
    assert warnings(caplog) == []


@pytest.mark.parametrize("kind", KINDS)
def test_names_not_known_here(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """A name not portable here, an xlocal not imported here: left out, or with
    unknown="error" refused."""
    ann = '"ann"'
    for bindings in (
        {"http_apps.request": {"user": ann, "secret": ann}},
        {"http_apps.request": {"user": ann}, "not_imported.anywhere": {"user": ann}},
    ):
        headers = signed(bindings)
        bound(exchange(kind, headers, key=KEY), expect(user="ann"))
        assert warnings(caplog) == []
        refused(exchange(kind, headers, key=KEY, unknown="error"))
        one_warning(caplog)


@pytest.mark.parametrize("kind", KINDS)
def test_limit(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """A carrier over limit= is refused; limit= raises the default too."""
    big = carrier(user="a" * (MAX_CARRIER_SIZE + 100), limit=MAX_CARRIER_SIZE + 500)
    small = carrier(user="a" * 200)
    refused(exchange(kind, small, key=KEY, limit=100))
    assert "limit" in one_warning(caplog)
    refused(exchange(kind, big, key=KEY))
    one_warning(caplog)
    done = exchange(kind, big, key=KEY, limit=MAX_CARRIER_SIZE + 500)
    bound(done, expect(user="a" * (MAX_CARRIER_SIZE + 100)))


@pytest.mark.parametrize("kind", KINDS)
def test_baggage(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """baggage= binds W3C baggage members, percent-decoded, under the signed carrier."""
    spec = {"tenant": request, "role": request}
    baggage = "tenant=acme%20corp;prop=1, other=x, role=admin"
    done = exchange(kind, {"baggage": baggage}, key=KEY, baggage=spec)
    bound(done, expect(tenant="acme corp", role="admin"))
    # the signed carrier wins a name both give; baggage fills the others
    headers = {**carrier(user="ann", tenant="signed"), "baggage": baggage}
    done = exchange(kind, headers, key=KEY, baggage=spec)
    bound(done, expect(user="ann", tenant="signed", role="admin"))
    # without baggage=, the header binds nothing
    bound(exchange(kind, {"baggage": baggage}, key=KEY), {})
    assert warnings(caplog) == []
    too_many = ",".join(f"m{i}=v" for i in range(100))
    for bad in (too_many, "tenant=" + "x" * 9000):
        refused(exchange(kind, {"baggage": bad}, key=KEY, baggage=spec))
        one_warning(caplog)


@pytest.mark.parametrize("kind", KINDS)
def test_app_that_raises(kind: str) -> None:
    """The app's error propagates, and nothing bound from the headers is left."""
    headers = as_list(carrier(user="ann"))
    seen_there: list[dict[str, Any]] = []

    def wsgi_app(environ: Any, start_response: Any) -> Any:
        seen_there.append(seen())
        raise BoomError("in the app")

    def wsgi_stream(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        seen_there.append(seen())
        yield b"first"
        raise BoomError("while streaming")

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        seen_there.append(seen())
        raise BoomError("in the app")

    if kind == "wsgi":
        for app in (wsgi_app, wsgi_stream):
            with pytest.raises(BoomError):
                Exchange().run_wsgi(WSGIMiddleware(app, key=KEY), headers)
            assert dir(request) == []
    else:
        with pytest.raises(BoomError):
            Exchange().run_asgi(ASGIMiddleware(asgi_app, key=KEY), headers)
    assert seen_there == [expect(user="ann")] * len(seen_there)
    assert dir(request) == []


def test_wsgi_response_never_closed_is_closed_in_its_own_context() -> None:
    """A response the server drops unclosed is closed, with the request's bindings,
    when it is freed; the server's thread never had them."""
    done = Exchange()
    middleware = WSGIMiddleware(done.wsgi_app, key=KEY)
    response = middleware(wsgi_environ(as_list(carrier(user="ann"))), _ignore)
    assert next(iter(response))
    assert dir(request) == []
    del response
    collect()
    assert done.chunks == [expect(user="ann")] * 2  # the first chunk, then finally


def _ignore(*args: Any) -> Callable[[bytes], None]:
    return lambda data: None


# -- ASGI: scopes, the server's calls, pipelining ------------------------------------


def test_lifespan_passes_through_untouched() -> None:
    """A lifespan scope reaches the app as it is, with the server's own callables."""
    calls: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope, receive, send, seen()))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    with request(user="server"):
        asyncio.run(ASGIMiddleware(app, key=KEY)(scope, receive, send))
    [(got, got_receive, got_send, saw)] = calls
    assert got is scope
    assert got == {"type": "lifespan", "asgi": {"version": "3.0"}}
    assert got_receive is receive
    assert got_send is send
    assert saw == expect(user="server")


def test_pipelined_request_started_inside_send_sees_nothing() -> None:
    """uvicorn starts a pipelined request from inside the previous one's send: the
    second, without headers, sees nothing of the first's carrier."""
    views: list[dict[str, Any]] = []
    started: list[asyncio.Task[None]] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        views.append(seen())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = ASGIMiddleware(app, key=KEY)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not started:
            second = middleware(asgi_scope([]), receive, send)
            started.append(asyncio.ensure_future(second))

    async def main() -> None:
        headers = as_list(carrier(user="ann", token=1))
        await middleware(asgi_scope(headers), receive, send)
        await asyncio.wait_for(started[0], TIMEOUT)

    asyncio.run(main())
    assert views == [expect(user="ann", token=1), {}]


def test_server_callables_keep_no_request_value() -> None:
    """What the server's send arms (a keep-alive timer) keeps no carrier value."""
    kept: list[Any] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Message) -> None:
        kept.append(asyncio.get_running_loop().call_later(3600, lambda: None))

    async def main() -> None:
        headers = as_list(carrier(token=99))
        await ASGIMiddleware(app, key=KEY)(asgi_scope(headers), _http_request, send)
        for handle in kept:
            handle.cancel()

    from _http_apps import alive  # noqa: PLC0415 - the Tokens this process made

    asyncio.run(main())
    collect()
    assert kept
    assert 99 not in {token.id for token in alive}


async def _http_request() -> Message:
    return {"type": "http.request", "body": b""}


# -- ASGI websockets -------------------------------------------------------------------


def websocket(app: Any, headers: Headers) -> tuple[list[Message], list[Any]]:
    """Drive a websocket through *app*: connect, one text, and the disconnect once
    the app has answered it (or closed), as a client would, since an app may read
    ahead (Quart does).  Returns the messages the app sent, and what the server's
    calls saw."""
    incoming = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
    ]
    sent: list[Message] = []
    outside: list[Any] = []
    events: list[asyncio.Event] = []

    def answered() -> asyncio.Event:  # made in the loop (Python 3.9 binds one)
        if not events:
            events.append(asyncio.Event())
        return events[0]

    async def receive() -> Message:
        outside.append(seen())
        if incoming:
            return incoming.pop(0)
        await answered().wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        outside.append(seen())
        sent.append(message)
        if len(sent) == 3 or message["type"] == "websocket.close":
            answered().set()

    asyncio.run(app(asgi_scope(headers, "websocket", "/ws"), receive, send))
    return sent, outside


def _frameworks() -> list[Any]:
    return [
        pytest.param("starlette", id="starlette"),
        pytest.param("fastapi", id="fastapi"),
        pytest.param("quart", id="quart"),
    ]


def _need_fastapi() -> None:
    pytest.importorskip(
        "fastapi",
        reason="fastapi is not installed here: its pydantic-core has no build for "
        "this interpreter (PyPy 3.9), see the test extra",
    )


def asgi_framework(name: str) -> Any:
    if name == "fastapi":
        _need_fastapi()
        return make_fastapi()
    if name == "quart":
        return make_quart()
    return make_starlette()


@pytest.mark.parametrize("framework", _frameworks())
def test_websocket_endpoint_sees_the_carrier(framework: str) -> None:
    """The endpoint sees the carrier's bindings before and after it receives."""
    app = ASGIMiddleware(asgi_framework(framework), key=KEY)
    sent, outside = websocket(app, as_list(carrier(user="ann", token=3)))
    assert [message["type"] for message in sent] == [
        "websocket.accept",
        "websocket.send",
        "websocket.send",
        "websocket.close",
    ]
    texts = [json.loads(message["text"]) for message in sent[1:3]]
    assert texts == [expect(user="ann", token=3)] * 2
    assert outside == [{}] * len(outside)


@pytest.mark.parametrize("framework", _frameworks())
def test_refused_websocket_is_closed_before_accept(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused carrier closes the websocket before the endpoint accepts it."""
    app = ASGIMiddleware(asgi_framework(framework), key=KEY)
    sent, _ = websocket(app, as_list(carrier(key=b"forger", user="root")))
    assert [message["type"] for message in sent] == ["websocket.close"]
    [message] = warnings(caplog)
    assert "/ws" in message
    # ignored instead: the endpoint runs, with nothing bound
    app = ASGIMiddleware(asgi_framework(framework), key=KEY, on_invalid="ignore")
    sent, _ = websocket(app, as_list(carrier(key=b"forger", user="root")))
    assert [json.loads(m["text"]) for m in sent if "text" in m] == [{}, {}]


# -- Composition with xlocal.wsgi and xlocal.asgi --------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_inside_xlocal_middleware_on_the_same_xlocal(kind: str) -> None:
    """Inside XlocalMiddleware on the same xlocal: the environ or scope and the
    carrier's names are bound together; outside it, its clean start hides them."""
    headers = as_list(carrier(user="ann"))
    own = "environ" if kind == "wsgi" else "scope"
    done = Exchange()
    if kind == "wsgi":
        inside = WSGIXlocalMiddleware(WSGIMiddleware(done.wsgi_app, key=KEY), request)
        done.run_wsgi(inside, headers)
    else:
        inside = ASGIXlocalMiddleware(ASGIMiddleware(done.asgi_app, key=KEY), request)
        done.run_asgi(inside, headers)
    bound(done, {**expect(user="ann"), f"bound:{own}": True})

    done = Exchange()
    if kind == "wsgi":
        outside = WSGIMiddleware(WSGIXlocalMiddleware(done.wsgi_app, request), key=KEY)
        done.run_wsgi(outside, headers)
    else:
        outside = ASGIMiddleware(ASGIXlocalMiddleware(done.asgi_app, request), key=KEY)
        done.run_asgi(outside, headers)
    assert done.views == [{f"bound:{own}": True}]
    assert dir(request) == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("http_inside", [True, False], ids=["inside", "outside"])
def test_with_xlocal_middleware_on_another_xlocal(
    kind: str, http_inside: bool, xcurrent: xlocal
) -> None:
    """On another xlocal, in either order, both middlewares' bindings hold."""
    headers = as_list(carrier(user="ann"))
    done = Exchange()
    views: list[Any] = []

    def wsgi_app(environ: Any, start_response: Any) -> Any:
        views.append(sorted(dir(xcurrent)))
        return done.wsgi_app(environ, start_response)

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        views.append(sorted(dir(xcurrent)))
        await done.asgi_app(scope, receive, send)

    if kind == "wsgi":
        http, plain = WSGIMiddleware, WSGIXlocalMiddleware
        app: Any = wsgi_app
    else:
        http, plain = ASGIMiddleware, ASGIXlocalMiddleware
        app = asgi_app
    if http_inside:
        middleware = plain(http(app, key=KEY), xcurrent, factories={"n": _one})
    else:
        middleware = http(plain(app, xcurrent, factories={"n": _one}), key=KEY)
    if kind == "wsgi":
        done.run_wsgi(middleware, headers)
    else:
        done.run_asgi(middleware, headers)
    bound(done, expect(user="ann"))
    assert views == [sorted(["environ" if kind == "wsgi" else "scope", "n"])]


def _one(*args: Any) -> int:
    return 1


# -- Construction ----------------------------------------------------------------------


MIDDLEWARES = [WSGIMiddleware, ASGIMiddleware]


def _app(*args: Any) -> None:
    pass


@pytest.mark.parametrize("middleware", MIDDLEWARES)
def test_needs_key_or_trust_unsigned_not_both(middleware: Any) -> None:
    with pytest.raises(TypeError, match="trust_unsigned=True"):
        middleware(_app)
    with pytest.raises(TypeError, match="key="):
        middleware(_app, trust_unsigned=False)
    with pytest.raises(TypeError):
        middleware(_app, key=KEY, trust_unsigned=True)


@pytest.mark.parametrize("middleware", MIDDLEWARES)
@pytest.mark.parametrize(
    "key",
    ["text", b"", [], [KEY, "text"], [KEY, b""], 42],
    ids=["str", "empty", "no-keys", "str-in-list", "empty-in-list", "int"],
)
def test_bad_keys(middleware: Any, key: Any) -> None:
    with pytest.raises(TypeError, match="key"):
        middleware(_app, key=key)


@pytest.mark.parametrize("middleware", MIDDLEWARES)
def test_keys_as_any_sequence(middleware: Any) -> None:
    middleware(_app, key=(KEY, OLD_KEY))
    middleware(_app, key=[KEY])


@pytest.mark.parametrize("middleware", MIDDLEWARES)
def test_bad_options(middleware: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="on_invalid"):
        middleware(_app, key=KEY, on_invalid="drop")
    with pytest.raises((TypeError, ValueError), match="unknown"):
        middleware(_app, key=KEY, unknown="warn")
    with pytest.raises(TypeError, match="application"):
        middleware(None, key=KEY)
    with pytest.raises(TypeError, match="application"):
        middleware("module:app", key=KEY)


@pytest.mark.parametrize("middleware", MIDDLEWARES)
@pytest.mark.parametrize(
    "spec",
    [
        ["tenant"],
        "tenant",
        {"tenant": "request"},
        {"tenant": None},
        {"not a name": request},
        {"_private": request},
        {1: request},
    ],
    ids=["list", "str", "str-value", "none-value", "space", "private", "int-key"],
)
def test_bad_baggage_spec(middleware: Any, spec: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="baggage"):
        middleware(_app, key=KEY, baggage=spec)


# -- The frameworks, in-process --------------------------------------------------------


async def _get_all(client: httpx.AsyncClient, calls: list[tuple[str, Any]]) -> Any:
    return await asyncio.gather(*(client.get(path, headers=h) for path, h in calls))


def framework_app(framework: str, **options: Any) -> tuple[str, Any]:
    """(kind, app) for *framework*, behind xlocal.http's middleware."""
    if framework == "flask":
        flask_app = make_flask()
        flask_app.testing = True  # errors propagate, as the middleware sees them
        return "wsgi", WSGIMiddleware(flask_app, **options)
    return "asgi", ASGIMiddleware(asgi_framework(framework), **options)


def get(kind: str, app: Any, calls: list[tuple[str, Any]]) -> list[httpx.Response]:
    """GET each of (path, headers) from *app* in-process: ASGI ones concurrently."""
    if kind == "wsgi":
        transport = httpx.WSGITransport(app=app)
        with httpx.Client(transport=transport, base_url="http://test") as client:
            return [client.get(path, headers=headers) for path, headers in calls]

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            return list(await _get_all(client, calls))

    return asyncio.run(main())


FRAMEWORKS = [
    "flask",
    *_frameworks(),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_framework_view_and_stream(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request sees its own carrier in the view and in each streamed chunk."""
    kind, app = framework_app(framework, key=KEY)
    calls = [
        (path, carrier(user=f"user{i}", token=i))
        for i in range(6)
        for path in ("/", "/stream")
    ]
    calls += [("/", {}), ("/stream", {})]
    if framework == "fastapi":
        calls += [("/sync", carrier(user="sync", token=100))]
    responses = get(kind, app, calls)
    for (path, headers), response in zip(calls, responses):
        assert response.status_code == 200, response.text
        user = json.loads(headers["xlocal"])["b"] if headers else {}
        names = user.get("http_apps.request", {})
        token = user.get("http_apps.trace", {}).get("token")
        want = expect(
            None if token is None else int(token),
            **{name: json.loads(value) for name, value in names.items()},
        )
        if path == "/stream":
            assert [json.loads(line) for line in response.text.splitlines()] == [
                want
            ] * 3
        else:
            assert response.json() == want
    assert warnings(caplog) == []
    assert dir(request) == []
    assert dir(trace) == []


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_framework_refused_and_raising(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A forged carrier gets the 400; a view's error propagates, nothing left bound."""
    kind, app = framework_app(framework, key=KEY)
    [response] = get(kind, app, [("/where", carrier(key=b"forger", user="root"))])
    assert (response.status_code, response.content) == (400, REFUSED_BODY)
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    one_warning(caplog)
    if framework == "quart":  # its error handler answers with what the view saw
        [response] = get(kind, app, [("/boom", carrier(user="ann"))])
        assert (response.status_code, response.json()) == (500, expect(user="ann"))
    else:
        with pytest.raises(BoomError) as raised:
            get(kind, app, [("/boom", carrier(user="ann"))])
        assert json.loads(str(raised.value)) == expect(user="ann")
    assert dir(request) == []


# -- Real servers ----------------------------------------------------------------------


async def raw_exchange(
    port: int, requests: list[Headers], path: str = "/", together: bool = True
) -> list[tuple[int, bytes]]:
    """GET *path* with each of *requests*' headers, in turn on one connection: all in
    one write (pipelined), or with *together* false each after the last response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = []
    for headers in requests:
        request = f"GET {path} HTTP/1.1\r\nHost: test\r\n".encode()
        for name, value in headers:
            raw = value if isinstance(value, bytes) else value.encode("latin-1")
            request += name.encode() + b": " + raw + b"\r\n"
        data.append(request + b"\r\n")
    try:
        if together:
            writer.write(b"".join(data))
            return [await read_response(reader) for _ in requests]
        responses = []
        for request in data:
            writer.write(request)
            responses.append(await read_response(reader))
        return responses
    finally:
        writer.close()


async def ws_exchange(port: int, headers: Headers) -> tuple[int | None, list[Any]]:
    """Open a websocket to /ws with *headers*; send one text.  Returns the rejection's
    status (None if accepted) and the JSON texts received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = WSConnection(ConnectionType.CLIENT)
    extra = [
        (name.encode(), value if isinstance(value, bytes) else value.encode())
        for name, value in headers
    ]
    writer.write(
        connection.send(WSRequest(host="test", target="/ws", extra_headers=extra))
    )
    texts: list[Any] = []
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
            connection.receive_data(data or None)
            for event in connection.events():
                if isinstance(event, AcceptConnection):
                    writer.write(connection.send(TextMessage("hi")))
                elif isinstance(event, TextMessage):
                    texts.append(json.loads(event.data))
                elif isinstance(event, RejectConnection):
                    return event.status_code, texts
                elif isinstance(event, RejectData):
                    continue
                elif isinstance(event, CloseConnection):
                    writer.write(connection.send(event.response()))
                    return None, texts
            if not data:
                return None, texts
            await writer.drain()
    finally:
        writer.close()


#: (server, app, streamed routes, whether it has a websocket at /ws)
SERVED = {
    "flask-gunicorn": (
        "gunicorn-gthread",
        "_http_apps:flask_served",
        ["/stream"],
        False,
    ),
    "django-gunicorn": ("gunicorn-gthread", "_http_django:wsgi", ["/stream"], False),
    "starlette-uvicorn": (
        "uvicorn-httptools",
        "_http_apps:starlette_served",
        ["/stream"],
        True,
    ),
    "quart-hypercorn": (
        "hypercorn",
        "_http_apps:quart_served()",
        ["/stream"],
        True,
    ),
    # an async iterator, and a sync one that Django iterates in a worker thread
    "django-uvicorn": (
        "uvicorn-h11",
        "_http_django:asgi",
        ["/astream", "/stream"],
        False,
    ),
}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Served]]:
    """Every server of SERVED, started together so that they boot in parallel."""
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(serve(server, app))
            for name, (server, app, _, _) in SERVED.items()
        }


@pytest.mark.parametrize("name", SERVED)
def test_real_server(name: str, servers: dict[str, Served]) -> None:
    """Concurrent requests with their own carriers, each seen in the view and in each
    streamed chunk; refused, duplicated and non-ASCII carriers get the 400; the
    pipelined request after a carrier's sees nothing; the carrier's values are gone
    while the connections idle in keep-alive."""
    server, _, streams, websockets = SERVED[name]
    paths = ["/", *streams]

    async def main(port: int) -> dict[str, Any]:
        found: dict[str, Any] = {}
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
            calls = [
                (path, carrier(user=f"user{i}", token=i))
                for i in range(8)
                for path in paths
            ]
            found["ok"] = [
                (r.status_code, r.text) for r in await _get_all(client, calls)
            ]
            forged = carrier(key=b"forger", user="root")
            response = await client.get("/", headers=forged)
            found["forged"] = response.status_code, response.content, response.headers
        ann = as_list(carrier(user="ann", token=50))
        together = pipelines(server)
        found["pipelined"] = await raw_exchange(port, [ann, [], ann, []], "/", together)
        found["hostile"] = await raw_exchange(
            port,
            [
                [*ann, *ann],
                [("xlocal", ann[0][1].encode() + b"\xe9\xff")],
                [("xlocal", "x" * (MAX_CARRIER_SIZE + 100))],
            ],
            "/",
            together,
        )
        if websockets:
            found["ws"] = await ws_exchange(port, as_list(carrier(user="ws", token=60)))
            found["ws refused"] = await ws_exchange(
                port, as_list(carrier(key=b"forger", user="root"))
            )
        # the keep-alive connections above are idle: their values must be gone
        [(status, body)] = await raw_exchange(port, [[]], "/stats")
        assert status == 200
        found["alive"] = json.loads(body)
        return found

    served = servers[name]
    try:
        found = asyncio.run(main(served.port))
    except (httpx.HTTPError, OSError, asyncio.TimeoutError):  # pragma: no cover
        pytest.fail(f"{name} failed:\n{served.tail()}")
    log = served.log.read_text(errors="replace")
    for i, (status, text) in enumerate(found["ok"]):
        assert status == 200, log
        request_id = i // len(paths)
        want = expect(user=f"user{request_id}", token=request_id)
        if i % len(paths):
            assert [json.loads(line) for line in text.splitlines()] == [want] * 3
        else:
            assert json.loads(text) == want
    status, body, headers = found["forged"]
    assert (status, body) == (400, REFUSED_BODY)
    assert headers["content-type"] == "text/plain; charset=utf-8"
    ann = expect(user="ann", token=50)
    assert [(s, json.loads(b)) for s, b in found["pipelined"]] == [
        (200, ann),
        (200, {}),
        (200, ann),
        (200, {}),
    ]
    assert [(s, b) for s, b in found["hostile"]] == [(400, REFUSED_BODY)] * 3
    if websockets:
        assert found["ws"] == (None, [expect(user="ws", token=60)] * 2)
        assert found["ws refused"] == (403, [])
    assert found["alive"] == [], log
    # one warning per refused request, each saying why
    refusals = 5 if websockets else 4
    assert log.count("cannot extract bindings from the carrier") == refusals, log
    assert "Traceback" not in log, log
