"""xlocal.otel with real OpenTelemetry: instrumented clients, a loopback server.

The global propagator is OpenTelemetry's composite of W3C trace context, W3C baggage
and xlocal's, as an application sets it; requests, httpx (sync and async) and aiohttp,
instrumented by OpenTelemetry's own instrumentations, send to a real HTTP server in a
thread of this process, which extracts with the same machinery and answers with what
its handler saw bound, and the headers it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import re
import textwrap
import threading
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import xlocal.otel
from xlocal import xlocal as make_xlocal
from xlocal.portable import (
    CARRIER_KEY,
    MAX_CARRIER_SIZE,
    SIGNATURE_KEY,
    UnportableError,
    inject,
)

TIMEOUT = 30.0
KEY = b"shared by the services, never logged"
OLD, NEW = b"the secret of last month", b"the secret of this month"

#: What travels: user and tenant; db never leaves the process.
request: Any = make_xlocal("tests.otel.request", portable={"user", "tenant"})
#: Every name travels (what a hostile carrier may try names on).
anything: Any = make_xlocal("tests.otel.anything", portable=True)


def composite(propagator: TextMapPropagator) -> CompositePropagator:
    """The global propagator an application sets: trace context, baggage, xlocal."""
    return CompositePropagator(
        [TraceContextTextMapPropagator(), W3CBaggagePropagator(), propagator]
    )


@pytest.fixture(autouse=True)
def _global_propagator() -> Iterator[None]:
    """Each test runs with the composite propagator, signed with KEY, as the global
    one, and the one before is restored after it; nothing of ``request`` is bound
    before or after."""
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(composite(xlocal.otel.Propagator(key=KEY)))
    assert not hasattr(request, "user")
    try:
        yield
    finally:
        propagate.set_global_textmap(before)
    assert not hasattr(request, "user")
    assert repr(request) == "<xlocal 'tests.otel.request' unbound>"


# -- the server ------------------------------------------------------------------------


class MessageGetter(Getter[Message]):
    """Reads the request headers as http.server parsed them: every value of a name."""

    def get(self, carrier: Message, key: str) -> list[str] | None:
        values = carrier.get_all(key)
        return None if values is None else [str(v) for v in values]

    def keys(self, carrier: Message) -> list[str]:
        return list(carrier.keys())


class Server:
    """A threaded HTTP server on a loopback port: each request's handler extracts the
    headers with ``receiver`` (the global propagator when None), and answers JSON of
    what it saw bound inside ``xlocal.otel.bound``, the trace id it extracted, its
    baggage and the headers it got."""

    def __init__(self) -> None:
        self.receiver: TextMapPropagator | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = self.headers
                propagator = server.receiver or propagate.get_global_textmap()
                context = propagator.extract(headers, getter=MessageGetter())
                with xlocal.otel.bound(context):
                    seen = {
                        name: getattr(request, name, None)
                        for name in ("user", "tenant", "db")
                    }
                span = trace.get_current_span(context).get_span_context()
                body = json.dumps(
                    {
                        "seen": seen,
                        "after": hasattr(request, "user"),
                        "trace_id": span.trace_id,
                        "baggage": dict(baggage.get_all(context)),
                        "headers": [[k.lower(), v] for k, v in headers.items()],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"

    def send(self, headers: list[tuple[str, str]]) -> dict[str, Any]:
        """Send a GET with exactly these headers (a name may repeat), no OTel."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            connection.putrequest("GET", "/")
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            assert response.status == 200
            answer: dict[str, Any] = json.loads(response.read())
        finally:
            connection.close()
        return answer


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The loopback server, started for the module and stopped after it."""
    served = Server()
    thread = threading.Thread(target=served.http.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.http.shutdown()
        served.http.server_close()
        thread.join(TIMEOUT)
        assert not thread.is_alive()


# -- the instrumented clients ----------------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    """An SDK tracer provider, so that client spans are real and traceparent is sent."""
    return TracerProvider()


@pytest.fixture(scope="module")
def instrumented(provider: TracerProvider) -> Iterator[None]:
    """requests and httpx instrumented by OpenTelemetry for the module, and after it
    not."""
    from opentelemetry.instrumentation.httpx import (  # noqa: PLC0415
        HTTPXClientInstrumentor,
    )
    from opentelemetry.instrumentation.requests import (  # noqa: PLC0415
        RequestsInstrumentor,
    )

    instrumentors = [RequestsInstrumentor(), HTTPXClientInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    try:
        yield
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()


def _requests_get(url: str) -> dict[str, Any]:
    response = requests.get(url, timeout=TIMEOUT)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def _httpx_get(url: str) -> dict[str, Any]:
    with httpx.Client(timeout=TIMEOUT) as client:
        response = client.get(url)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def _httpx_async_get(url: str) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            response = await client.get(url)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    return asyncio.run(get())


SYNC_CLIENTS = {
    "requests": _requests_get,
    "httpx": _httpx_get,
    "httpx async": _httpx_async_get,
}


def _header(answer: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in answer["headers"] if key == name]


def _signature(text: str, key: bytes) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _check_carried(answer: dict[str, Any], user: str, tenant: str) -> None:
    """The request carried user and tenant, signed with KEY, beside traceparent and
    baggage, and the handler saw them bound (and nothing after its with-block)."""
    assert answer["seen"] == {"user": user, "tenant": tenant, "db": None}
    assert answer["after"] is False
    [text] = _header(answer, CARRIER_KEY)
    [signature] = _header(answer, SIGNATURE_KEY)
    assert signature == _signature(text, KEY)
    assert json.loads(text)["b"] == {
        "tests.otel.request": {"tenant": json.dumps(tenant), "user": json.dumps(user)}
    }
    assert len(_header(answer, "traceparent")) == 1
    assert answer["trace_id"] != 0
    assert _header(answer, "baggage") == ["region=eu"]
    assert answer["baggage"] == {"region": "eu"}


@contextlib.contextmanager
def _baggage(**members: str) -> Iterator[None]:
    """OpenTelemetry baggage attached to the current context for the block."""
    context = otel_context.get_current()
    for name, value in members.items():
        context = baggage.set_baggage(name, value, context)
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


# -- sending through instrumented clients ----------------------------------------------


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("client", list(SYNC_CLIENTS))
def test_instrumented_client_carries_the_bindings(server: Server, client: str) -> None:
    """An instrumented client's request carries the bindings of its caller, signed,
    next to traceparent and baggage; the server's handler sees them bound."""
    get = SYNC_CLIENTS[client]
    with _baggage(region="eu"), request(user="ann", tenant="acme", db="a connection"):
        answer = get(server.url)
    _check_carried(answer, "ann", "acme")


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("client", list(SYNC_CLIENTS))
def test_nothing_bound_sends_an_empty_carrier(server: Server, client: str) -> None:
    """A request sent with nothing bound carries an empty signed carrier (so that no
    earlier one is passed on) and binds nothing on the server."""
    answer = SYNC_CLIENTS[client](server.url)
    [text] = _header(answer, CARRIER_KEY)
    assert text == '{"b":{},"v":1}'
    assert _header(answer, SIGNATURE_KEY) == [_signature(text, KEY)]
    assert answer["seen"] == {"user": None, "tenant": None, "db": None}


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("client", list(SYNC_CLIENTS))
def test_concurrent_threads_each_send_their_own(server: Server, client: str) -> None:
    """Threads that bind different users and send at the same moment each carry their
    own user, and each server handler sees only the user of its request."""
    get = SYNC_CLIENTS[client]
    users = [f"user{i}" for i in range(8)]
    barrier = threading.Barrier(len(users), timeout=TIMEOUT)
    answers: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def call(user: str) -> None:
        try:
            with _baggage(region="eu"), request(user=user, tenant=f"t-{user}"):
                barrier.wait()  # all bound before any sends
                answers[user] = get(server.url)
                assert request.user == user
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=call, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    for user in users:
        _check_carried(answers[user], user, f"t-{user}")


@pytest.mark.usefixtures("instrumented")
def test_concurrent_asyncio_tasks_each_send_their_own(server: Server) -> None:
    """asyncio tasks that bind different users, all bound before any sends through
    one shared instrumented httpx.AsyncClient, each carry their own user."""
    users = [f"task{i}" for i in range(8)]

    async def main() -> dict[str, dict[str, Any]]:
        ready = asyncio.Event()
        waiting = [len(users)]

        async with httpx.AsyncClient(timeout=TIMEOUT) as client:

            async def call(user: str) -> dict[str, Any]:
                with _baggage(region="eu"), request(user=user, tenant=f"t-{user}"):
                    waiting[0] -= 1
                    if waiting[0] == 0:
                        ready.set()
                    await asyncio.wait_for(ready.wait(), TIMEOUT)
                    response = await client.get(server.url)
                    assert request.user == user
                answer: dict[str, Any] = response.json()
                return answer

            answers = await asyncio.gather(*(call(user) for user in users))
        return dict(zip(users, answers))

    answers = asyncio.run(main())
    for user in users:
        _check_carried(answers[user], user, f"t-{user}")


def test_aiohttp_client_carries_the_bindings(
    server: Server, provider: TracerProvider
) -> None:
    """aiohttp, instrumented by OpenTelemetry, carries each task's own bindings."""
    instrumentor = AioHttpClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    users = ["a1", "a2", "a3"]

    async def main() -> list[dict[str, Any]]:
        ready = asyncio.Event()
        waiting = [len(users)]
        async with aiohttp.ClientSession() as session:

            async def call(user: str) -> dict[str, Any]:
                with _baggage(region="eu"), request(user=user, tenant=f"t-{user}"):
                    waiting[0] -= 1
                    if waiting[0] == 0:
                        ready.set()
                    await asyncio.wait_for(ready.wait(), TIMEOUT)
                    async with session.get(server.url) as response:
                        answer: dict[str, Any] = await response.json()
                return answer

            return list(await asyncio.gather(*(call(user) for user in users)))

    try:
        answers = asyncio.run(main())
    finally:
        instrumentor.uninstrument()
    for user, answer in zip(users, answers):
        _check_carried(answer, user, f"t-{user}")


@pytest.mark.usefixtures("instrumented")
def test_unencodable_value_fails_the_send(server: Server) -> None:
    """A bound portable value its codec cannot encode raises UnportableError in the
    caller that sends, naming it: the request is not sent without it."""
    with request(user=("a", "tuple")):
        with pytest.raises(UnportableError, match=r"^cannot carry 'user' of <xlocal "):
            requests.get(server.url, timeout=TIMEOUT)
        assert request.user == ("a", "tuple")


def test_inject_reads_the_current_execution_not_the_context() -> None:
    """inject writes the bindings of the current execution whatever OTel context it
    is given, and signs with the first key of a rotation."""
    propagator = xlocal.otel.Propagator(key=[NEW, OLD])
    with request(user="ann"):
        elsewhere = propagator.extract(propagator_carrier(propagator))
    carrier: dict[str, str] = {}
    with request(user="bob"):
        propagator.inject(carrier, context=elsewhere)
    assert json.loads(carrier[CARRIER_KEY])["b"] == {
        "tests.otel.request": {"user": '"bob"'}
    }
    assert carrier[SIGNATURE_KEY] == _signature(carrier[CARRIER_KEY], NEW)
    with xlocal.otel.bound(elsewhere):
        assert request.user == "ann"


def propagator_carrier(propagator: TextMapPropagator) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagator.inject(carrier)
    return carrier


def test_unsigned_propagator_writes_no_signature() -> None:
    """With trust_unsigned=True the carrier goes unsigned, and is believed."""
    propagator = xlocal.otel.Propagator(trust_unsigned=True)
    with request(user="ann", tenant="acme"):
        carrier = propagator_carrier(propagator)
    assert set(carrier) == {CARRIER_KEY}
    with xlocal.otel.bound(propagator.extract(carrier)):
        assert (request.user, request.tenant) == ("ann", "acme")


# -- receiving -------------------------------------------------------------------------


def _signed(**values: Any) -> dict[str, str]:
    with request(**values):
        return inject(key=KEY)


def _readme_blocks() -> list[str]:
    """The code blocks of README.txt's "OpenTelemetry" section, dedented."""
    text = (Path(__file__).parent.parent / "README.txt").read_text()
    section = text.split("\nOpenTelemetry\n-------------\n", 1)[1].split("\n\n\n", 1)[0]
    blocks = []
    for part in section.split("::\n\n")[1:]:
        code = re.match(r"(?:    [^\n]*\n|\n)+", part)
        assert code is not None
        blocks.append(textwrap.dedent(code.group(0)))
    return blocks


@pytest.mark.usefixtures("instrumented")
def test_readme_recipe_as_written(server: Server) -> None:
    """README's two blocks, run as written: the first sets the global propagator, so
    that an instrumented request carries the bindings signed with SECRET; the second
    binds what the propagator extracts from them."""
    setup, receive = _readme_blocks()
    propagate.set_global_textmap(TraceContextTextMapPropagator())  # no xlocal in it
    exec(setup, {"SECRET": KEY})
    with request(user="ann", tenant="acme"):
        answer = _requests_get(server.url)
    [text] = _header(answer, CARRIER_KEY)
    assert _header(answer, SIGNATURE_KEY) == [_signature(text, KEY)]
    assert len(_header(answer, "traceparent")) == 1
    assert answer["seen"] == {"user": "ann", "tenant": "acme", "db": None}

    seen: list[tuple[str, str]] = []
    headers = dict(answer["headers"])
    names = {
        "opentelemetry": __import__("opentelemetry.propagate"),
        "xlocal": xlocal,
        "headers": headers,
        "message": "a message",
        "handle": lambda message: seen.append((message, request.user)),
    }
    exec(receive, names)
    assert seen == [("a message", "ann")]
    assert not hasattr(request, "user")
    headers[SIGNATURE_KEY] = _signature(text, b"another key")
    with pytest.raises(AttributeError):
        exec(receive, names)


def test_extract_then_bound_binds_for_the_block() -> None:
    """propagate.extract(headers) then ``with bound(ctx)`` binds the carried names for
    the block only, also when the block raises; a context may be entered again, and
    nested."""
    context = propagate.extract(_signed(user="ann", tenant="acme"))
    assert not hasattr(request, "user")  # extracting binds nothing yet
    with xlocal.otel.bound(context):
        assert (request.user, request.tenant) == ("ann", "acme")
        with request(user="inner"), xlocal.otel.bound(context):
            assert request.user == "ann"
        assert request.user == "ann"
    assert not hasattr(request, "user")

    def fail() -> None:
        with xlocal.otel.bound(context):
            assert request.user == "ann"
            raise KeyError

    with pytest.raises(KeyError):
        fail()
    assert not hasattr(request, "user")


def test_bound_uses_the_current_context() -> None:
    """Without an argument, bound() reads the current OTel context (as attached by a
    server instrumentation)."""
    token = otel_context.attach(propagate.extract(_signed(user="ann")))
    try:
        with xlocal.otel.bound():
            assert request.user == "ann"
    finally:
        otel_context.detach(token)
    with xlocal.otel.bound():
        assert not hasattr(request, "user")


@pytest.mark.parametrize(
    "context",
    [None, otel_context.Context(), otel_context.set_value("other", 1)],
    ids=["current", "empty", "other values"],
)
def test_bound_without_extract_binds_nothing(context: Any) -> None:
    """bound() of a context no xlocal carrier was extracted into binds nothing."""
    with xlocal.otel.bound(context):
        assert not hasattr(request, "user")
    assert repr(xlocal.otel.bound(context)) == "<Extracted (nothing)>"


def test_carrier_without_xlocal_field_binds_nothing_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Headers from a client that does not use xlocal bind nothing and log nothing;
    nor does a signature alone."""
    with caplog.at_level(logging.DEBUG, "xlocal.otel"):
        for headers in ({}, {"traceparent": "x"}, {SIGNATURE_KEY: "0" * 64}):
            with xlocal.otel.bound(propagate.extract(headers)):
                assert not hasattr(request, "user")
    assert caplog.records == []


def test_extract_is_checked_at_extract_time() -> None:
    """The carrier is decoded when extracted: changing the headers afterwards changes
    nothing that is bound."""
    headers = _signed(user="ann")
    context = propagate.extract(headers)
    headers[CARRIER_KEY] = headers[CARRIER_KEY].replace("ann", "eve")
    with xlocal.otel.bound(context):
        assert request.user == "ann"


def _forged() -> dict[str, str]:
    headers = _signed(user="ann")
    headers[CARRIER_KEY] = headers[CARRIER_KEY].replace('"ann', '"root')
    return headers


def _other_signature() -> dict[str, str]:
    return {**_signed(user="root"), SIGNATURE_KEY: _signed(user="ann")[SIGNATURE_KEY]}


def _with_key(key: bytes) -> dict[str, str]:
    with request(user="root"):
        return inject(key=key)


def _unsigned() -> dict[str, str]:
    with request(user="root"):
        return inject()


def _resigned(text: str) -> dict[str, str]:
    """A carrier of *text*, signed with KEY: only the checks after the signature's
    can refuse it (a sender with the key that is broken, or a leaked key)."""
    return {CARRIER_KEY: text, SIGNATURE_KEY: _signature(text, KEY)}


_NESTED = '{"b":{"tests.otel.request":{"user":"' + "[" * 7_000 + '"}},"v":1}'

HOSTILE: dict[str, tuple[Any, str]] = {
    "value changed": (_forged, "its signature is missing or does not match"),
    "another carrier's signature": (
        _other_signature,
        "its signature is missing or does not match",
    ),
    "signed with another key": (
        lambda: _with_key(b"an attacker's key"),
        "its signature is missing or does not match",
    ),
    "unsigned": (_unsigned, "its signature is missing or does not match"),
    "signature in capitals": (
        lambda: {
            k: v.upper() if k == SIGNATURE_KEY else v for k, v in _with_key(KEY).items()
        },
        "its signature is missing or does not match",
    ),
    "empty": (lambda: _resigned(""), "it is not valid JSON"),
    "garbage": (lambda: {CARRIER_KEY: "\x00garbage", SIGNATURE_KEY: "x"}, "signature"),
    "garbage, signed": (lambda: _resigned("not json"), "it is not valid JSON"),
    "oversized": (
        lambda: _resigned("x" * (MAX_CARRIER_SIZE + 1)),
        f"it is {MAX_CARRIER_SIZE + 1} characters long, over the limit",
    ),
    "non-ASCII, signed": (
        lambda: _resigned('{"b":{"tests.otel.request":{"user":"\\"é\\""}},"v":1}'),
        "printable ASCII",
    ),
    "other version, signed": (
        lambda: _resigned('{"b":{},"v":2}'),
        "its format version is 2",
    ),
    "private name, signed": (
        lambda: _resigned('{"b":{"tests.otel.request":{"_db":"1"}},"v":1}'),
        "'_db' cannot be bound",
    ),
    "keyword name, signed": (
        lambda: _resigned('{"b":{"tests.otel.anything":{"class":"1"}},"v":1}'),
        "'class'",
    ),
    "value not JSON, signed": (
        lambda: _resigned('{"b":{"tests.otel.request":{"user":"ann"}},"v":1}'),
        "cannot be decoded",
    ),
    "infinite number, signed": (
        lambda: _resigned('{"b":{"tests.otel.request":{"user":"1e999"}},"v":1}'),
        "cannot be decoded",
    ),
    # Too deep for the decoder's stack up to 3.13; 3.14 reads that deep, and finds
    # no end: refused either way.
    "nested 7,000 deep, signed": (
        lambda: _resigned(_NESTED),
        "the value of 'user' on <xlocal 'tests.otel.request'> cannot be decoded",
    ),
    "a key twice, signed": (
        lambda: _resigned('{"b":{},"b":{},"v":1}'),
        "a key appears twice",
    ),
    "xlocal given twice": (
        lambda: {**_signed(user="ann"), CARRIER_KEY: [_forged()[CARRIER_KEY]] * 2},
        "its 'xlocal' field is given 2 times",
    ),
    "signature given twice": (
        lambda: {
            **_signed(user="ann"),
            SIGNATURE_KEY: [_signed(user="ann")[SIGNATURE_KEY]] * 2,
        },
        "its 'xlocal-signature' field is given 2 times",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_invalid_carrier_binds_nothing_logs_once(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A forged, changed, unsigned, malformed, oversized or repeated carrier never
    raises: it binds nothing, keeps the trace context extracted beside it, and logs
    one WARNING on "xlocal.otel" saying why, without the key."""
    make, why = HOSTILE[case]
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {**make(), "traceparent": traceparent}
    with caplog.at_level(logging.DEBUG):
        context = propagate.extract(headers)
    with xlocal.otel.bound(context):
        assert not hasattr(request, "user")
    span = trace.get_current_span(context).get_span_context()
    assert span.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    records = [r for r in caplog.records if r.name == "xlocal.otel"]
    assert [r.levelno for r in records] == [logging.WARNING], caplog.text
    message = records[0].getMessage()
    assert message.startswith("ignored an invalid xlocal carrier: cannot extract")
    assert why in message
    assert message.endswith("nothing was bound")
    assert KEY.decode() not in caplog.text
    assert "root" not in message.split("carrier:", 1)[0]


def test_invalid_carrier_leaves_the_given_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An invalid carrier returns the context it was given as it was: what an earlier
    extract stored stays (OpenTelemetry's rule: keep the previous valid value)."""
    propagator = xlocal.otel.Propagator(key=KEY)
    first = propagator.extract(_signed(user="ann"))
    with caplog.at_level(logging.WARNING, "xlocal.otel"):
        again = propagator.extract(_forged(), first)
    assert again is first
    assert len(caplog.records) == 1
    empty = otel_context.Context()
    assert propagator.extract(_forged(), empty) is empty


def test_extract_defaults_to_the_root_context() -> None:
    """Without a context, extract extends the root context, not the current one: an
    earlier request's bindings attached here are not passed on to a new extraction."""
    propagator = xlocal.otel.Propagator(key=KEY)
    token = otel_context.attach(propagator.extract(_signed(user="ann")))
    try:
        context = propagator.extract({})
    finally:
        otel_context.detach(token)
    with xlocal.otel.bound(context):
        assert not hasattr(request, "user")


class RaisingGetter(Getter[Any]):
    """A getter of the application's that fails."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        raise RuntimeError("the headers are gone")

    def keys(self, carrier: Any) -> list[str]:
        return []


@pytest.mark.parametrize(
    ("carrier", "getter", "why"),
    [
        (None, None, "AttributeError"),
        (["xlocal"], None, "AttributeError"),
        ({CARRIER_KEY: 7}, None, "is of type int, not str"),
        ({CARRIER_KEY: b'{"b":{},"v":1}'}, None, "field is given"),
        ({}, RaisingGetter(), "RuntimeError: the headers are gone"),
    ],
    ids=["None", "list", "int value", "bytes value", "getter raises"],
)
def test_extract_never_raises(
    carrier: Any, getter: Any, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever the carrier or the getter, extract logs one WARNING and returns the
    context unchanged."""
    propagator = xlocal.otel.Propagator(trust_unsigned=True)
    given = otel_context.set_value("other", 1)
    kwargs = {} if getter is None else {"getter": getter}
    with caplog.at_level(logging.DEBUG, "xlocal.otel"):
        assert propagator.extract(carrier, given, **kwargs) is given
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert why in caplog.records[0].getMessage()


def test_unknown_names_are_ignored_or_refused(caplog: pytest.LogCaptureFixture) -> None:
    """A name not portable here, or an xlocal this process does not know, is ignored
    quietly; with unknown="error" the carrier is refused and logged."""
    text = (
        '{"b":{"nowhere.x":{"a":"1"},"tests.otel.request":{"db":"\\"x\\"",'
        '"user":"\\"ann\\""}},"v":1}'
    )
    ignoring = xlocal.otel.Propagator(key=KEY)
    with caplog.at_level(logging.DEBUG, "xlocal.otel"):
        with xlocal.otel.bound(ignoring.extract(_resigned(text))):
            assert request.user == "ann"
            assert not hasattr(request, "db")
        assert caplog.records == []
        strict = xlocal.otel.Propagator(key=KEY, unknown="error")
        with xlocal.otel.bound(strict.extract(_resigned(text))):
            assert not hasattr(request, "user")
    assert len(caplog.records) == 1
    assert "not a portable xlocal in this process" in caplog.text


def test_limit_is_the_carriers() -> None:
    """limit= bounds what inject makes and extract reads."""
    small = xlocal.otel.Propagator(key=KEY, limit=40)
    with (
        request(user="x" * 50),
        pytest.raises(ValueError, match="over the limit of 40"),
    ):
        propagator_carrier(small)
    with xlocal.otel.bound(small.extract(_signed(user="x" * 50))):
        assert not hasattr(request, "user")


# -- keys ------------------------------------------------------------------------------


def test_key_rotation(server: Server) -> None:
    """While keys rotate, a receiver with [new, old] believes carriers signed with the
    old key and with the new one; a receiver with the old key alone refuses the new
    one's; a receiver with a key dropped refuses carriers signed with it."""
    senders = {
        "old": xlocal.otel.Propagator(key=OLD),
        "new first": xlocal.otel.Propagator(key=[NEW, OLD]),
    }
    receivers = {
        "old": xlocal.otel.Propagator(key=OLD),
        "new, old": xlocal.otel.Propagator(key=(NEW, OLD)),
        "new": xlocal.otel.Propagator(key=[NEW]),
    }
    believed = {
        ("old", "old"),
        ("old", "new, old"),
        ("new first", "new, old"),
        ("new first", "new"),
    }
    try:
        for sender, sending in senders.items():
            with request(user=f"from {sender}"):
                carrier = propagator_carrier(sending)
            for receiver, receiving in receivers.items():
                server.receiver = composite(receiving)
                answer = server.send(list(carrier.items()))
                user = f"from {sender}" if (sender, receiver) in believed else None
                assert answer["seen"]["user"] == user, (sender, receiver)
    finally:
        server.receiver = None


def test_over_the_wire_hostile_headers(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Over real HTTP: the carrier header sent twice, a forged one, or an unsigned one
    binds nothing in the server's handler and logs one WARNING each."""
    signed = _signed(user="ann")
    forged = _forged()
    attempts = {
        "twice": [(CARRIER_KEY, signed[CARRIER_KEY])] * 2
        + [(SIGNATURE_KEY, signed[SIGNATURE_KEY])],
        "forged": list(forged.items()),
        "unsigned": [(CARRIER_KEY, signed[CARRIER_KEY])],
        "header case": [(k.upper(), v) for k, v in forged.items()],
    }
    for name, headers in attempts.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, "xlocal.otel"):
            answer = server.send(headers)
        assert answer["seen"]["user"] is None, name
        assert len(caplog.records) == 1, name
    with caplog.at_level(logging.WARNING, "xlocal.otel"):
        caplog.clear()
        assert server.send(list(signed.items()))["seen"]["user"] == "ann"
        upper = [(k.upper(), v) for k, v in signed.items()]
        assert server.send(upper)["seen"]["user"] == "ann"
    assert caplog.records == []


# -- the propagator itself -------------------------------------------------------------


def test_is_a_text_map_propagator() -> None:
    """Propagator is a real TextMapPropagator with the two fields it writes, and its
    repr shows how it signs, never the key."""
    propagator = xlocal.otel.Propagator(key=[NEW, OLD])
    assert isinstance(propagator, TextMapPropagator)
    assert propagator.fields == {"xlocal", "xlocal-signature"}
    propagator.fields.clear()  # a copy: the propagator's are unchanged
    assert propagator.fields == {"xlocal", "xlocal-signature"}
    assert repr(propagator) == "<xlocal.otel.Propagator signed, 2 keys>"
    assert repr(xlocal.otel.Propagator(key=KEY)) == (
        "<xlocal.otel.Propagator signed, 1 key>"
    )
    assert repr(xlocal.otel.Propagator(trust_unsigned=True)) == (
        "<xlocal.otel.Propagator unsigned>"
    )
    assert xlocal.otel.__all__ == ["Propagator", "bound"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, TypeError, r"^Propagator\(\) needs key= .* or trust_unsigned=True "),
        (
            {"trust_unsigned": False},
            TypeError,
            r"^Propagator\(\) needs key= .* or trust_unsigned=True ",
        ),
        (
            {"key": KEY, "trust_unsigned": True},
            TypeError,
            r"^Propagator\(\) takes key= or trust_unsigned=True, not both",
        ),
        ({"key": "text"}, TypeError, r"^key= must be a secret of non-empty bytes"),
        ({"key": b""}, TypeError, r"^key= must be a secret of non-empty bytes"),
        ({"key": []}, TypeError, r"^key= is an empty sequence"),
        ({"key": [NEW, "old"]}, TypeError, r"^every secret in key= must be non-empty"),
        (
            {"key": KEY, "unknown": "warn"},
            ValueError,
            r"^unknown= must be 'ignore' or 'error', not 'warn'$",
        ),
        ({"key": KEY, "limit": 0}, ValueError, r"^limit= must be a positive int"),
        ({"key": KEY, "limit": "8000"}, ValueError, r"^limit= must be a positive int"),
    ],
)
def test_misuse_is_refused_at_construction(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Misuse raises when the propagator is made, not on the first request."""
    with pytest.raises(error, match=message):
        xlocal.otel.Propagator(**kwargs)


def test_positional_arguments_are_refused() -> None:
    """Every option is keyword-only: a key passed by position is refused."""
    with pytest.raises(TypeError):
        xlocal.otel.Propagator(KEY)  # type: ignore[misc]
