"""xlocal.http's sending side, against a real loopback server, and W3C baggage.

Each client (requests, httpx sync and async, aiohttp) sends to a real HTTP server in
a thread of this process, behind ``xlocal.http.WSGIMiddleware``; the app answers
with what it saw bound and the headers it got.  The baggage codec is tested on its
own too, against the W3C syntax and limits.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import pickle
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import aiohttp
import httpx
import pytest
import requests

import xlocal
import xlocal.http
from xlocal import _baggage
from xlocal.http import BaggageError, aiohttp_trace_config, headers, install
from xlocal.portable import CARRIER_KEY, SIGNATURE_KEY, CarrierError, extract

request = xlocal.xlocal("test_http_clients.request", portable={"user", "tenant"})
other = xlocal.xlocal("test_http_clients.other", portable={"trace"})
OLD, NEW = b"old secret", b"new secret"


def seen() -> dict[str, Any]:
    return {
        name: getattr(x, name)
        for x in (request, other)
        for name in ("user", "tenant", "trace")
        if hasattr(x, name)
    }


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """What the request sees bound, and the xlocal headers it came with; /redirect
    sends the client to / first, /elsewhere to / on another host name (localhost for
    127.0.0.1: the same server)."""
    if environ["PATH_INFO"] == "/redirect":
        start_response("302 Found", [("Location", "/"), ("Content-Length", "0")])
        return []
    if environ["PATH_INFO"] == "/elsewhere":
        there = f"http://localhost:{environ['SERVER_PORT']}/"
        start_response("302 Found", [("Location", there), ("Content-Length", "0")])
        return []
    sent = {
        key[5:].lower().replace("_", "-"): value
        for key, value in environ.items()
        if key in ("HTTP_XLOCAL", "HTTP_XLOCAL_SIGNATURE", "HTTP_BAGGAGE")
    }
    body = json.dumps({"seen": seen(), "headers": sent}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _Threaded(WSGIServer):
    def process_request(self, request: Any, client_address: Any) -> None:
        # One thread per connection, so that concurrent callers are served at once.
        threading.Thread(
            target=self._serve_one, args=(request, client_address), daemon=True
        ).start()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """A real server: rotated keys (a carrier signed with either is believed), and
    the tenant readable from W3C baggage."""
    app = xlocal.http.WSGIMiddleware(echo, key=[NEW, OLD], baggage={"tenant": request})
    server = make_server(
        "127.0.0.1", 0, app, server_class=_Threaded, handler_class=_Quiet
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_requests_session_carries_the_bindings_where_each_request_is_sent(
    url: str,
) -> None:
    session = install(requests.Session(), key=OLD)
    with request(user=1, tenant="acme"), other(trace="t-1"):
        got = session.get(url).json()
    assert got["seen"] == {"user": 1, "tenant": "acme", "trace": "t-1"}
    assert sorted(got["headers"]) == ["xlocal", "xlocal-signature"]
    with request(user=2):
        assert session.get(url).json()["seen"] == {"user": 2}
    # Outside any binding the carrier is still written, empty: nothing is bound there.
    assert session.get(url).json()["seen"] == {}


def test_requests_keeps_the_adapters_settings_and_reinstalling_replaces(
    url: str,
) -> None:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(max_retries=3)
    session.mount("http://", adapter)
    install(session, key=b"a key the server does not know")
    wrapped = session.get_adapter(url)
    assert wrapped.inner is adapter
    assert wrapped.max_retries.total == 3  # the adapter's own settings, seen through
    assert "carrying" in repr(wrapped)
    with request(user=1):
        assert session.get(url).status_code == 400
    install(session, key=[NEW, OLD])  # again: replaces, does not wrap twice
    assert session.get_adapter(url).inner is adapter
    with request(user=1):
        assert session.get(url).json()["seen"] == {"user": 1}
    session.close()


def test_requests_adapters_mounted_after_install_carry_too(url: str) -> None:
    """An adapter mounted after install (retries, a test double's own) is wrapped as
    it is mounted: no request leaves the session without the carrier."""
    session = install(requests.Session(), key=NEW)
    later = requests.adapters.HTTPAdapter(max_retries=2)
    session.mount(url, later)
    assert session.get_adapter(url).inner is later
    with request(user=3):
        assert session.get(url).json()["seen"] == {"user": 3}
    install(session, key=b"a key the server does not know")  # the new options win
    session.mount(url, later)
    with request(user=3):
        assert session.get(url).status_code == 400
    session.close()


class _Recording(requests.adapters.HTTPAdapter):
    """An adapter of the application's own: it records its closing, and copies
    itself its own way."""

    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()

    def __deepcopy__(self, memo: Any) -> _Recording:
        return _Recording()


def test_the_wrapped_adapter_is_the_one_that_is_set_and_closed(url: str) -> None:
    session = install(requests.Session(), key=NEW)
    inner = _Recording()
    session.mount(url, inner)
    wrapped = session.get_adapter(url)
    plain = session.get_adapter("http://")
    session.mount(url + "deeper/", requests.adapters.HTTPAdapter())
    # mount moves the shorter prefixes after the new one: they are not wrapped again.
    assert session.get_adapter(url) is wrapped
    assert session.get_adapter("http://") is plain
    # Settings set through the wrapper are the wrapped adapter's.
    wrapped.max_retries = requests.adapters.Retry(total=4)
    assert inner.max_retries.total == 4
    # Special methods are the wrapper's own, not the wrapped adapter's.
    assert hasattr(inner, "__deepcopy__")
    assert not hasattr(wrapped, "__deepcopy__")
    copied = copy.deepcopy(wrapped)
    assert type(copied) is type(wrapped)
    assert type(copied.inner) is _Recording
    with request(user=6):
        assert session.get(url).json()["seen"] == {"user": 6}
    session.close()
    assert inner.closed


@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda session: pickle.loads(pickle.dumps(session))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_a_copied_or_pickled_session_carries(url: str, duplicate: Any) -> None:
    """requests pickles and copies a Session whole (its adapters among its state):
    the copy carries, also through an adapter mounted on it afterwards."""
    original = install(requests.Session(), key=NEW, hosts={"127.0.0.1"})
    session = duplicate(original)
    with request(user=5):
        assert session.get(url).json()["seen"] == {"user": 5}
        session.mount(url, requests.adapters.HTTPAdapter())
        assert session.get(url).json()["seen"] == {"user": 5}
        there = url.replace("127.0.0.1", "localhost")  # hosts= kept too
        assert session.get(there).json() == {"seen": {}, "headers": {}}
    session.close()
    original.close()


def test_a_session_installed_with_baggage_is_not_pickled() -> None:
    session = install(requests.Session(), key=NEW, baggage={"tenant": request})
    with pytest.raises(
        TypeError,
        match=r"^cannot pickle a client that xlocal.http was installed on with "
        r"baggage=: it names xlocals, which are not pickled; install it again",
    ):
        pickle.dumps(session)
    copied = copy.deepcopy(session)  # in the process: the same options
    assert (
        copied.get_adapter("http://x").sender is session.get_adapter("http://x").sender
    )
    session.close()


def test_requests_threads_each_send_their_own_bindings(url: str) -> None:
    """One session shared by threads: each request carries its own thread's."""
    session = install(requests.Session(), key=NEW)
    barrier = threading.Barrier(8)
    results: dict[int, Any] = {}

    def call(user: int) -> None:
        with request(user=user):
            barrier.wait(timeout=10)
            results[user] = [session.get(url).json()["seen"] for _ in range(5)]

    threads = [threading.Thread(target=call, args=(user,)) for user in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {user: [{"user": user}] * 5 for user in range(8)}


def test_subclasses_of_the_clients_are_installed_on(url: str) -> None:
    """A client of the application's own class, made from requests' or httpx's."""

    class Session(requests.Session):
        pass

    class Client(httpx.Client):
        pass

    class AsyncClient(httpx.AsyncClient):
        pass

    session = install(Session(), key=NEW)
    client = install(Client(), key=NEW)
    with request(user=8):
        assert session.get(url).json()["seen"] == {"user": 8}
        assert client.get(url).json()["seen"] == {"user": 8}

    async def main() -> Any:
        async with install(AsyncClient(), key=NEW) as client:
            with request(user=9):
                return (await client.get(url)).json()["seen"]

    assert asyncio.run(main()) == {"user": 9}
    session.close()
    client.close()


def test_httpx_client_and_hooks_of_its_own(url: str) -> None:
    calls: list[str] = []
    client = httpx.Client(event_hooks={"request": [lambda r: calls.append("mine")]})
    assert install(client, key=OLD) is client
    install(client, key=NEW)  # replaces xlocal's hook, keeps the user's
    assert len(client.event_hooks["request"]) == 2
    with request(user=5, tenant="t"):
        got = client.get(url).json()
    assert got["seen"] == {"user": 5, "tenant": "t"}
    assert calls == ["mine"]
    client.close()


def test_httpx_async_client_carries_each_tasks_bindings(url: str) -> None:
    async def main() -> list[Any]:
        async with install(httpx.AsyncClient(), key=OLD) as client:

            async def call(user: int) -> Any:
                with request(user=user):
                    await asyncio.sleep(0)  # interleave the tasks
                    return (await client.get(url)).json()["seen"]

            return await asyncio.gather(*(call(user) for user in range(10)))

    assert asyncio.run(main()) == [{"user": user} for user in range(10)]


def test_aiohttp_trace_config_carries_each_tasks_bindings_and_baggage(
    url: str,
) -> None:
    async def main() -> list[Any]:
        config = aiohttp_trace_config(key=NEW, baggage={"tenant": request})
        async with aiohttp.ClientSession(trace_configs=[config]) as session:

            async def call(user: int) -> Any:
                with request(user=user, tenant=f"tenant {user}"):
                    await asyncio.sleep(0)
                    async with session.get(url) as response:
                        return await response.json()

            return await asyncio.gather(*(call(user) for user in range(10)))

    for user, got in enumerate(asyncio.run(main())):
        assert got["seen"] == {"user": user, "tenant": f"tenant {user}"}
        assert got["headers"]["baggage"] == f"tenant=tenant%20{user}"


def test_redirects_carry_the_bindings_too(url: str) -> None:
    """The request after a redirect carries them again (each client sends it anew)."""
    session = install(requests.Session(), key=NEW)
    client = install(httpx.Client(follow_redirects=True), key=NEW)
    with request(user=3):
        response = session.get(url + "redirect")
        assert [r.status_code for r in response.history] == [302]
        assert response.json()["seen"] == {"user": 3}
        response = client.get(url + "redirect")
        assert [r.status_code for r in response.history] == [302]
        assert response.json()["seen"] == {"user": 3}

    async def main() -> Any:
        config = aiohttp_trace_config(key=NEW)
        async with aiohttp.ClientSession(trace_configs=[config]) as session:
            with request(user=4):
                async with session.get(url + "redirect") as response:
                    assert len(response.history) == 1
                    return await response.json()

    assert asyncio.run(main())["seen"] == {"user": 4}
    session.close()
    client.close()


def _send_all(
    url: str, hosts: Any, path: str, sent_baggage: str | None = None
) -> dict[str, Any]:
    """What the server saw of a request to *url* + *path*, sent by each client
    installed with *hosts*, with user 7 and tenant "acme" bound (the tenant also as
    baggage)."""
    options: Any = {"key": NEW, "baggage": {"tenant": request}, "hosts": hosts}
    extra = {} if sent_baggage is None else {"baggage": sent_baggage}
    session = install(requests.Session(), **options)
    client = install(httpx.Client(follow_redirects=True), **options)
    got = {}
    with request(user=7, tenant="acme"):
        got["requests"] = session.get(url + path, headers=extra).json()
        got["httpx"] = client.get(url + path, headers=extra).json()

        async def main() -> None:
            async with install(
                httpx.AsyncClient(follow_redirects=True), **options
            ) as client:
                got["httpx async"] = (
                    await client.get(url + path, headers=extra)
                ).json()
            config = aiohttp_trace_config(**options)
            async with (
                aiohttp.ClientSession(trace_configs=[config]) as session,
                session.get(url + path, headers=extra) as response,
            ):
                got["aiohttp"] = await response.json()

        asyncio.run(main())
    session.close()
    client.close()
    return got


CLIENTS = ["requests", "httpx", "httpx async", "aiohttp"]


def each(seen: dict[str, Any], **headers: str) -> dict[str, Any]:
    """The same answer from every client: what the request saw bound, and its headers
    (a carrier and its signature shown as such)."""
    return {client: {"seen": seen, "headers": headers} for client in CLIENTS}


def shown(got: dict[str, Any]) -> dict[str, Any]:
    for answer in got.values():
        for name in (CARRIER_KEY, SIGNATURE_KEY):
            if name in answer["headers"]:
                answer["headers"][name] = f"<{name}>"
    return got


def test_hosts_limit_the_requests_that_carry_the_bindings(url: str) -> None:
    """With hosts=, a request to another host goes without the headers: also when a
    listed host redirects there, though clients copy a request's headers to the next.
    Of the request's baggage, the members named by baggage= go too, the others stay."""
    assert url.startswith("http://127.0.0.1:")
    carried = each(
        {"user": 7, "tenant": "acme"},
        **{CARRIER_KEY: f"<{CARRIER_KEY}>", SIGNATURE_KEY: f"<{SIGNATURE_KEY}>"},
        baggage="tenant=acme",
    )
    assert shown(_send_all(url, {"127.0.0.1"}, "")) == carried
    assert _send_all(url, ["127.0.0.1"], "elsewhere") == each({})
    there = url.replace("127.0.0.1", "localhost")
    assert _send_all(there, ["127.0.0.1"], "") == each({})
    assert _send_all(url, ("127.0.0.1",), "elsewhere", "k=v,tenant=mine") == each(
        {}, baggage="k=v"
    )
    assert shown(_send_all(url, ("127.0.0.1",), "", "k=v,tenant=mine")) == each(
        {"user": 7, "tenant": "acme"},
        **{CARRIER_KEY: f"<{CARRIER_KEY}>", SIGNATURE_KEY: f"<{SIGNATURE_KEY}>"},
        baggage="k=v,tenant=acme",
    )
    # Listed by another spelling (case, a final dot), and reached by a redirect from a
    # host not listed.  aiohttp tells a trace config of a redirect before it knows
    # where it leads: with hosts=, its redirected requests go without.
    got = shown(_send_all(url, {"LOCALHOST."}, "elsewhere"))
    assert got == {**carried, "aiohttp": each({})["aiohttp"]}
    assert _send_all(url, {"127.0.0.1"}, "redirect")["aiohttp"] == each({})["aiohttp"]
    # Without hosts=, every host gets them, the one a redirect leads to included.
    assert shown(_send_all(url, None, "elsewhere")) == carried


@pytest.mark.parametrize(
    ("hosts", "error", "message"),
    [
        ("orders.internal", TypeError, r"^hosts= is a collection of host names"),
        (b"orders", TypeError, r"^hosts= is a collection of host names"),
        (3, TypeError, r"^hosts= is a collection of host names, .*not 3$"),
        ([b"orders"], TypeError, r"^hosts= names each host with a str, not b'orders'$"),
        (set(), ValueError, r"^hosts= is empty, so no request would carry"),
        (["http://orders"], ValueError, r"without a scheme, port or path, not 'http"),
        (["orders:8000"], ValueError, r"without a scheme, port or path, not 'orders:"),
        (["orders/x"], ValueError, r"without a scheme, port or path"),
        (["a b"], ValueError, r"without a scheme, port or path"),
        ([""], ValueError, r"without a scheme, port or path, not ''$"),
        (["bücher.example"], ValueError, r"^hosts= takes a host name in its ASCII"),
        (["[::1"], ValueError, r"without a scheme, port or path, not '\[::1'$"),
        (["::1]"], ValueError, r"without a scheme, port or path, not '::1\]'$"),
    ],
)
def test_hosts_must_name_hosts(hosts: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        install(requests.Session(), hosts=hosts)
    with pytest.raises(error, match=message):
        aiohttp_trace_config(hosts=hosts)


def test_hosts_take_ipv6_addresses_with_or_without_brackets() -> None:
    # The option as install keeps it.
    assert xlocal.http._Sender(
        None, None, 100, ["[::1]", "::1", "A.Example."]
    ).hosts == {
        "::1",
        "a.example",
    }


def test_install_refuses_what_it_cannot_carry_on() -> None:
    with pytest.raises(
        TypeError,
        match=r"^install\(\) takes a requests.Session, an httpx.Client or an "
        r"httpx.AsyncClient, not builtins.dict; for aiohttp, pass trace_configs=",
    ):
        install({})
    with pytest.raises(TypeError, match=r"not httpx.Request"):
        install(httpx.Request("GET", "http://x"))
    with pytest.raises(TypeError, match=r"^key= must be a secret of non-empty bytes"):
        install(requests.Session(), key="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^baggage= maps each member's name"):
        aiohttp_trace_config(baggage=["tenant"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^limit= must be a positive int, not 0"):
        headers(limit=0)
    # limit=1 is a limit (that even an empty carrier exceeds), not a bad option.
    with pytest.raises(CarrierError, match=r"limit of 1, even with nothing"):
        headers(limit=1)


def test_headers_are_the_carrier_plus_baggage() -> None:
    with request(user=1, tenant="a,b;c"):
        made = headers(key=[NEW, OLD], baggage={"tenant": request})
        assert headers(key=NEW)[SIGNATURE_KEY] == made[SIGNATURE_KEY]
    assert sorted(made) == ["baggage", CARRIER_KEY, SIGNATURE_KEY]
    assert made["baggage"] == "tenant=a%2Cb%3Bc"
    with extract(made, key=[OLD, NEW]):
        assert seen() == {"user": 1, "tenant": "a,b;c"}
    assert "baggage" not in headers(baggage={"tenant": request})  # nothing bound


def test_baggage_of_a_non_str_is_a_clear_error() -> None:
    with (
        request(tenant=7),
        pytest.raises(
            TypeError,
            match=r"^cannot send 'tenant' of <xlocal 'test_http_clients.request'> as "
            r"W3C baggage: it is bound to a int, and baggage carries text",
        ),
    ):
        headers(baggage={"tenant": request})


def test_baggage_joins_a_header_the_request_has(url: str) -> None:
    session = install(requests.Session(), baggage={"tenant": request}, key=OLD)
    with request(tenant="mine"):
        got = session.get(url, headers={"baggage": "tenant=theirs, k=v;prop=1"}).json()
    assert got["headers"]["baggage"] == "k=v;prop=1,tenant=mine"
    assert got["seen"] == {"tenant": "mine"}


def test_a_service_in_another_language_sets_baggage_names(url: str) -> None:
    """Only the names the receiver lists; unsigned; the signed carrier wins."""
    got = requests.get(url, headers={"baggage": "tenant=acme%20co;p, user=9"}).json()
    assert got["seen"] == {"tenant": "acme co"}  # user is not in baggage=
    session = install(requests.Session(), key=NEW)
    with request(tenant="signed"):
        got = session.get(url, headers={"baggage": "tenant=unsigned"}).json()
    assert got["seen"] == {"tenant": "signed"}


@pytest.mark.parametrize(
    "header",
    [
        "tenant=a b",  # whitespace in a value
        "tenant=%zz",  # not a percent-escape
        "tenant=%ff",  # not UTF-8
        "tenant",  # no value
        "tenant=a,tenant=b",  # twice
        'tenant="a"',
        "tenant=a;=b",
        "tenant=" + "v" * 4090,  # a member over 4,096 bytes
        ",".join(f"k{i}=v" for i in range(65)),  # members the receiver does not
        ",".join(["k=" + "v" * 4000] * 3),  # read count toward the limits
    ],
)
def test_malformed_or_oversized_baggage_is_refused(
    url: str, header: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BaggageError):
        _baggage.parse(header, {"tenant"})
    with caplog.at_level(logging.WARNING, logger="xlocal.http"):
        response = requests.get(url, headers={"baggage": header})
    assert (response.status_code, response.text) == (400, "invalid xlocal carrier\n")
    assert len(caplog.records) == 1


@pytest.mark.parametrize(
    "header",
    [
        "",
        ", ,",
        "tenant=acme,,",  # empty list elements, skipped as HTTP asks
        "=v,tenant=acme",  # members of other tools, in whatever syntax they
        "other=has space, tenant=acme",  # wrote them, are not the receiver's
        "other=a,other=b,tenant=acme",
    ],
)
def test_what_the_receiver_does_not_read_is_skipped(url: str, header: str) -> None:
    expected = {"tenant": "acme"} if "tenant" in header else {}
    assert _baggage.parse(header, {"tenant"}) == expected
    assert requests.get(url, headers={"baggage": header}).json()["seen"] == expected


def test_every_member_is_checked_when_all_are_read() -> None:
    for header in ("=v", "k=a b", "k=1,k=2", "k=%e9"):
        with pytest.raises(BaggageError):
            _baggage.parse(header)
    assert _baggage.parse("a=1,,b=2") == {"a": "1", "b": "2"}


def test_baggage_within_the_limits_is_read() -> None:
    members = {f"k{i}": "v" for i in range(64)}
    assert _baggage.parse(",".join(f"{k}={v}" for k, v in members.items())) == members
    assert _baggage.parse(" a = 1 ;p;q=2 ,\tb=%C3%A9") == {"a": "1", "b": "é"}
    assert _baggage.parse("k=" + "v" * 4094) == {"k": "v" * 4094}
    at_limit = "a=" + "x" * 4094 + ",b=" + "x" * 4093  # 8,192 bytes
    assert _baggage.parse(at_limit) == {"a": "x" * 4094, "b": "x" * 4093}


def test_sending_baggage_at_the_limits_is_allowed() -> None:
    """A member of 4,096 bytes, 64 members and 8,192 bytes in all are sent."""
    assert _baggage.merge(None, {"tenant": "x" * 4089}) == "tenant=" + "x" * 4089
    many = ",".join(f"k{i}=v" for i in range(63))
    assert _baggage.merge(many, {"tenant": "x"}) == many + ",tenant=x"
    full = "a=" + "x" * 4000 + ",b=" + "x" * 4000
    assert len(_baggage.merge(full, {"tenant": "x" * 179})) == 8192
    with pytest.raises(BaggageError, match=r"^cannot send W3C baggage of 8193 bytes"):
        _baggage.merge(full, {"tenant": "x" * 180})


def test_a_header_one_byte_over_the_limit_is_refused() -> None:
    with pytest.raises(BaggageError, match=r"^the baggage header is 8193 bytes"):
        _baggage.parse("a=" + "x" * 4094 + ",b=" + "x" * 4094)


def test_only_the_bound_names_of_baggage_are_sent() -> None:
    """An unbound name of baggage= is left out; the names after it are still sent."""
    spec = {"user": request, "role": request, "tenant": request}
    with request(tenant="acme"):
        assert headers(baggage=spec)["baggage"] == "tenant=acme"


def test_sending_baggage_over_the_limits_is_a_clear_error() -> None:
    with pytest.raises(
        BaggageError, match=r"^cannot send 'tenant' as W3C baggage: its member is 4097"
    ):
        _baggage.merge(None, {"tenant": "x" * 4090})
    with pytest.raises(BaggageError, match=r"^cannot send W3C baggage of 65 members"):
        _baggage.merge(",".join(f"k{i}=v" for i in range(64)), {"tenant": "x"})
    with pytest.raises(BaggageError, match=r"^cannot send W3C baggage of 8"):
        _baggage.merge("a=" + "x" * 4000 + ",b=" + "x" * 4000, {"tenant": "x" * 300})
    assert BaggageError.__module__ == "xlocal.http"
    assert issubclass(BaggageError, ValueError)


def test_baggage_names_must_be_bindable() -> None:
    for spec, error, message in (
        ({"_private": request}, ValueError, r"a name that can be bound"),
        ({"a-b": request}, ValueError, r"a name that can be bound"),
        ({"class": request}, ValueError, r"^baggage= names 'class': "),
        ({"tenant": "request"}, TypeError, r"maps 'tenant' to str, not to the xlocal"),
    ):
        with pytest.raises(error, match=message):
            headers(baggage=spec)  # type: ignore[arg-type]
        with pytest.raises(error, match=message):
            xlocal.http.WSGIMiddleware(echo, key=NEW, baggage=spec)  # type: ignore[arg-type]
