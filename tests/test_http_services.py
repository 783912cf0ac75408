"""Portable bindings across three real services over HTTP, with xlocal.http.

The services of ``_http_services.py`` run each in its own process on loopback: A
(Flask, gunicorn gthread) calls B (FastAPI, uvicorn) which calls C (plain WSGI,
gunicorn gevent).  The test process is the first caller: it binds the values and
sends them with an installed client, and checks what every hop saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import aiohttp
import httpx
import pytest
import requests
from _http_services import (
    A_LIMIT,
    KEY_FORGED,
    KEY_NEW,
    KEY_OLD,
    Token,
    svc,
    trace,
)
from _servers import TIMEOUT, Served, serve

import xlocal.http
from xlocal.portable import inject

CALLERS = 50
#: (A's client, B's client): every pair of them.
ROUTES = [(a, b) for a in ("requests", "httpx") for b in ("httpx", "aiohttp")]
#: What A answers for a carrier it refuses.
REFUSED = b"invalid xlocal carrier\n"
#: W3C baggage as a service in another language sends it: only the percent-encoded
#: member, no xlocal header.
FOREIGN_BAGGAGE = "tenant=acme%20co"


@dataclass
class Services:
    a: Served
    b: Served
    c: Served

    def url(self, name: str) -> str:
        served: Served = getattr(self, name)
        return f"http://127.0.0.1:{served.port}"


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    """The three services, C first so that each knows the URL of the next."""
    with serve("gunicorn-gevent", "_http_services:service_c") as c:
        c_url = f"http://127.0.0.1:{c.port}"
        with serve(
            "uvicorn-httptools", "_http_services:service_b", env={"SVC_NEXT": c_url}
        ) as b:
            b_url = f"http://127.0.0.1:{b.port}"
            with serve(
                "gunicorn-gthread",
                "_http_services:service_a",
                env={"SVC_NEXT": b_url},
                extra=["--threads", str(CALLERS + 14)],
            ) as a:
                yield Services(a, b, c)


@pytest.fixture(scope="module")
def plain(services: Services) -> Iterator[httpx.Client]:
    """A client that sends no xlocal headers of its own."""
    with httpx.Client(timeout=TIMEOUT) as client:
        yield client


def _values(n: int | str) -> dict[str, str]:
    """A caller's values, as the services report them."""
    return {"user": f"user {n}", "tenant": f"tenant {n} & co", "token": f"tok-{n}"}


@contextlib.contextmanager
def _bind(values: dict[str, str]) -> Iterator[None]:
    """Bind a caller's values: user and tenant on svc, the token on trace."""
    request = svc(user=values["user"], tenant=values["tenant"])
    token = trace(token=Token(values["token"]))
    with request, token:
        yield


def _check_chain(status: int, answer: dict[str, Any], values: dict[str, str]) -> None:
    """Every hop saw exactly *values*, before and after calling the next one, and
    C got the tenant as W3C baggage too."""
    assert status == 200, answer
    assert answer["service"] == "A"
    assert answer["saw"] == answer["after"] == values
    assert answer["status"] == 200, answer
    b = answer["next"]
    assert b["service"] == "B"
    assert b["saw"] == b["after"] == values
    if sys.implementation.name == "cpython":
        assert b["framework"] == "fastapi"
    assert b["status"] == 200, b
    c = b["next"]
    assert c["service"] == "C"
    assert c["saw"] == values
    assert c["baggage"] is not None
    members = dict(member.split("=", 1) for member in c["baggage"].split(","))
    assert unquote(members["tenant"]) == values["tenant"]


def _chain_path(route: tuple[str, str]) -> str:
    return f"/chain?client={route[0]}&then={route[1]}"


# -- Every client, every hop -----------------------------------------------------------


def test_requests_session_carries_to_every_hop(services: Services) -> None:
    """A requests.Session signing with the new key: all three hops see its values."""
    session = xlocal.http.install(requests.Session(), key=[KEY_NEW, KEY_OLD])
    with session:
        for route in ROUTES:
            values = _values(f"requests {route}")
            with _bind(values):
                response = session.get(
                    services.url("a") + _chain_path(route), timeout=TIMEOUT
                )
            _check_chain(response.status_code, response.json(), values)


def test_httpx_client_carries_to_every_hop(services: Services) -> None:
    """An httpx.Client still signing with the old key: A accepts it during rotation."""
    client = xlocal.http.install(httpx.Client(timeout=TIMEOUT), key=KEY_OLD)
    with client:
        for route in ROUTES:
            values = _values(f"httpx {route}")
            with _bind(values):
                response = client.get(services.url("a") + _chain_path(route))
            _check_chain(response.status_code, response.json(), values)


def test_aiohttp_session_carries_to_every_hop(services: Services) -> None:
    """An aiohttp session with xlocal's trace config: all three hops see its values."""

    async def main() -> None:
        config = xlocal.http.aiohttp_trace_config(key=(KEY_NEW,))
        async with aiohttp.ClientSession(trace_configs=[config]) as session:
            for route in ROUTES:
                values = _values(f"aiohttp {route}")
                with _bind(values):
                    url = services.url("a") + _chain_path(route)
                    async with session.get(url) as response:
                        _check_chain(response.status, await response.json(), values)

    asyncio.run(main())


def test_nothing_bound_without_headers(services: Services, plain: httpx.Client) -> None:
    """A request without xlocal headers sees nothing bound, at every hop, also on
    the pooled connections (A's to B, B's to C) that a request with bindings used
    just before; and A and B then send carriers that bind nothing."""
    with _bind(_values("before")):
        client = xlocal.http.install(httpx.Client(timeout=TIMEOUT), key=KEY_NEW)
        with client:
            response = client.get(services.url("a") + _chain_path(ROUTES[0]))
            assert response.status_code == 200
    for name in ("a", "b", "c"):
        response = plain.get(services.url(name) + "/seen")
        assert response.status_code == 200
        assert response.json()["saw"] == {}
    for route in ROUTES:
        response = plain.get(services.url("a") + _chain_path(route))
        answer = response.json()
        assert answer["saw"] == answer["next"]["saw"] == {}
        assert answer["next"]["next"] == {"service": "C", "saw": {}, "baggage": None}


# -- Concurrent callers ----------------------------------------------------------------


def test_fifty_threads_see_only_their_own(services: Services) -> None:
    """50 threads with different users call A at once through one shared installed
    client: every hop of every call sees only the values of its caller."""
    barrier = threading.Barrier(CALLERS)
    answers: dict[int, tuple[int, Any]] = {}
    errors: list[BaseException] = []
    limits = httpx.Limits(max_connections=CALLERS)
    client = xlocal.http.install(
        httpx.Client(timeout=TIMEOUT, limits=limits), key=KEY_NEW
    )

    def call(n: int) -> None:
        try:
            with _bind(_values(n)):
                barrier.wait(TIMEOUT)
                response = client.get(
                    services.url("a") + _chain_path(ROUTES[n % len(ROUTES)])
                )
                answers[n] = response.status_code, response.json()
        except BaseException as error:  # pragma: no cover - shown below
            errors.append(error)

    with client:
        threads = [threading.Thread(target=call, args=(n,)) for n in range(CALLERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(2 * TIMEOUT)
    assert errors == []
    assert sorted(answers) == list(range(CALLERS))
    for n, (status, answer) in answers.items():
        _check_chain(status, answer, _values(n))


def test_fifty_tasks_see_only_their_own(services: Services) -> None:
    """50 asyncio tasks with different users share an aiohttp session: no cross-talk."""

    async def main() -> dict[int, tuple[int, Any]]:
        ready = asyncio.Event()
        waiting = 0
        config = xlocal.http.aiohttp_trace_config(key=KEY_OLD)
        connector = aiohttp.TCPConnector(limit=CALLERS)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(
            trace_configs=[config], connector=connector, timeout=timeout
        ) as session:

            async def call(n: int) -> tuple[int, Any]:
                nonlocal waiting
                with _bind(_values(n)):
                    waiting += 1
                    if waiting == CALLERS:
                        ready.set()
                    await asyncio.wait_for(ready.wait(), TIMEOUT)
                    url = services.url("a") + _chain_path(ROUTES[n % len(ROUTES)])
                    async with session.get(url) as response:
                        return response.status, await response.json()

            results = await asyncio.gather(*(call(n) for n in range(CALLERS)))
        return dict(enumerate(results))

    for n, (status, answer) in asyncio.run(main()).items():
        _check_chain(status, answer, _values(n))


# -- Carriers refused ------------------------------------------------------------------


def _signed(values: dict[str, str], key: Any = KEY_NEW) -> dict[str, str]:
    with _bind(values):
        return inject(key=key)


def _forged() -> list[tuple[str, str]]:
    return list(_signed(_values("forged"), KEY_FORGED).items())


def _replayed() -> list[tuple[str, str]]:
    """A carrier A would accept, captured, with one value changed."""
    carrier = _signed(_values("victim"))
    assert "user victim" in carrier["xlocal"]
    carrier["xlocal"] = carrier["xlocal"].replace("user victim", "user mallory")
    return list(carrier.items())


def _unsigned() -> list[tuple[str, str]]:
    with _bind(_values("unsigned")):
        return list(inject().items())


def _oversized() -> list[tuple[str, str]]:
    """Signed with the right key, and over A's limit (under the server's header
    size limit, so that it reaches the middleware)."""
    values = {**_values("big"), "user": "x" * A_LIMIT}
    with _bind(values):
        carrier = inject(key=KEY_NEW, limit=2 * A_LIMIT)
    assert A_LIMIT < len(carrier["xlocal"]) < 8000
    return list(carrier.items())


def _garbage() -> list[tuple[str, str]]:
    return [("xlocal", "{{{ garbage ]]"), ("xlocal-signature", "not hex at all")]


def _duplicated() -> list[tuple[str, str]]:
    """A good carrier, with both its headers sent twice."""
    carrier = _signed(_values("twice"))
    return [*carrier.items(), *carrier.items()]


def _signed_garbage() -> list[tuple[str, str]]:
    """Garbage that carries a valid signature of itself."""
    text = '{"b": {"svc.request": {"user": ["not", "a str"]}}, "v": 1'
    signature = hmac.new(KEY_NEW, text.encode(), hashlib.sha256).hexdigest()
    return [("xlocal", text), ("xlocal-signature", signature)]


SIGNATURE = "its signature is missing or does not match"
#: Each bad carrier, and why A refuses it (as the log says).
BAD = {
    "forged": (_forged, SIGNATURE),
    "replayed": (_replayed, SIGNATURE),
    "unsigned": (_unsigned, SIGNATURE),
    "oversized": (_oversized, f"over the limit of {A_LIMIT}"),
    "garbage": (_garbage, SIGNATURE),
    "signed-garbage": (_signed_garbage, "it is not valid JSON"),
    # the server joins the two values of each header into one
    "duplicated": (_duplicated, SIGNATURE),
}


def _log_lines(served: Served, marker: str) -> list[str]:
    return [line for line in served.log.read_text().splitlines() if marker in line]


@pytest.mark.parametrize("case", BAD)
def test_bad_carrier_is_refused(
    services: Services, plain: httpx.Client, case: str
) -> None:
    """A answers 400 with no secret in the body, runs nothing, logs the refusal
    once, and serves the next good request."""
    make, reason = BAD[case]
    headers = make()
    marker = f"/refused-{case}-{uuid.uuid4().hex}"
    response = plain.get(services.url("a") + marker, headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content == REFUSED
    lines = _log_lines(services.a, marker)
    assert len(lines) == 1, services.a.tail()
    assert lines[0].startswith("xlocal.http WARNING "), lines
    assert f"GET '{marker}'" in lines[0]
    assert reason in lines[0]
    log = services.a.log.read_text()
    for key in (KEY_NEW, KEY_OLD, KEY_FORGED):
        assert key.decode() not in log
        assert key.hex() not in log
    assert "Traceback" not in log
    # the next request works, and sees nothing of the refused one
    response = plain.get(services.url("a") + "/seen")
    assert response.json() == {"service": "A", "saw": {}}
    client = xlocal.http.install(httpx.Client(timeout=TIMEOUT), key=KEY_NEW)
    with client, _bind(_values(f"after {case}")):
        response = client.get(services.url("a") + _chain_path(ROUTES[-1]))
    _check_chain(response.status_code, response.json(), _values(f"after {case}"))


def test_asgi_refuses_duplicated_headers_and_rotated_out_keys(
    services: Services, plain: httpx.Client
) -> None:
    """B accepts only the new key, and refuses a good carrier sent twice."""
    cases = {
        "old-key": (list(_signed(_values("old"), KEY_OLD).items()), SIGNATURE),
        "duplicated": (_duplicated(), "more than one 'xlocal' header"),
        "forged": (_forged(), SIGNATURE),
    }
    for case, (headers, reason) in cases.items():
        marker = f"/refused-{case}-{uuid.uuid4().hex}"
        response = plain.get(services.url("b") + marker, headers=headers)
        assert (response.status_code, response.content) == (400, REFUSED), case
        lines = _log_lines(services.b, marker)
        assert len(lines) == 1, services.b.tail()
        assert reason in lines[0]
    response = plain.get(services.url("b") + "/seen", headers=_signed(_values("new")))
    assert response.json() == {"service": "B", "saw": _values("new")}


def test_names_not_portable_are_not_bound(
    services: Services, plain: httpx.Client
) -> None:
    """A signed carrier that also names what is not portable binds only what is."""
    payload = {
        "b": {
            "svc.request": {"user": '"ann"', "role": '"admin"'},
            "svc.unknown": {"user": '"eve"'},
        },
        "v": 1,
    }
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    signature = hmac.new(KEY_NEW, text.encode(), hashlib.sha256).hexdigest()
    headers = {"xlocal": text, "xlocal-signature": signature}
    for name in ("a", "b", "c"):
        response = plain.get(services.url(name) + "/seen", headers=headers)
        assert response.json()["saw"] == {"user": "ann"}, name


def test_ignoring_middleware_runs_with_nothing_bound(
    services: Services, plain: httpx.Client
) -> None:
    """C is configured with on_invalid="ignore": it answers forged and changed
    carriers with nothing bound from the headers, not even their good baggage, and
    logs each once."""
    for case in ("forged", "replayed", "garbage"):
        marker = f"/ignored-{case}-{uuid.uuid4().hex}"
        headers = [*BAD[case][0](), ("baggage", FOREIGN_BAGGAGE)]
        response = plain.get(services.url("c") + marker, headers=headers)
        assert response.status_code == 200
        expected = {"service": "C", "saw": {}, "baggage": FOREIGN_BAGGAGE}
        assert response.json() == expected
        lines = _log_lines(services.c, marker)
        assert len(lines) == 1, services.c.tail()
        assert BAD[case][1] in lines[0]
    response = plain.get(services.url("c") + "/seen", headers=_signed(_values("c")))
    assert response.json()["saw"] == _values("c")


# -- W3C baggage -----------------------------------------------------------------------


def test_baggage_from_a_service_in_another_language(
    services: Services, plain: httpx.Client
) -> None:
    """C binds the configured baggage member, percent-decoded, and only that one;
    a signed carrier wins a name both give."""
    response = plain.get(
        services.url("c") + "/seen", headers={"baggage": FOREIGN_BAGGAGE}
    )
    assert response.json()["saw"] == {"tenant": "acme co"}
    other = "user=mallory,tenant=acme%20co;ttl=10, role=admin"
    response = plain.get(services.url("c") + "/seen", headers={"baggage": other})
    assert response.json()["saw"] == {"tenant": "acme co"}
    headers = {**_signed(_values("signed")), "baggage": FOREIGN_BAGGAGE}
    response = plain.get(services.url("c") + "/seen", headers=headers)
    assert response.json()["saw"] == _values("signed")


def test_baggage_is_sent_by_a_configured_client(services: Services) -> None:
    """B's clients (httpx and aiohttp) send the bound tenant as a W3C baggage member,
    percent-encoded."""
    values = {**_values("baggage"), "tenant": "acme co"}
    client = xlocal.http.install(httpx.Client(timeout=TIMEOUT), key=KEY_NEW)
    with client:
        for route in ROUTES[:2]:
            with _bind(values):
                response = client.get(services.url("a") + _chain_path(route))
            answer = response.json()
            _check_chain(response.status_code, answer, values)
            assert answer["next"]["next"]["baggage"] == FOREIGN_BAGGAGE


# -- Lifetimes -------------------------------------------------------------------------


def test_no_value_outlives_its_request(services: Services, plain: httpx.Client) -> None:
    """Once a service is idle, no Token that a request decoded is alive in it, after
    every kind of request of the tests before (run alone, this test makes its own),
    and no request found anything bound outside the middleware."""
    client = xlocal.http.install(httpx.Client(timeout=TIMEOUT), key=KEY_NEW)
    with client:
        for route in ROUTES:
            with _bind(_values(f"alive {route}")):
                response = client.get(services.url("a") + _chain_path(route))
            _check_chain(
                response.status_code, response.json(), _values(f"alive {route}")
            )
    for name in ("a", "b", "c"):
        report = plain.get(services.url(name) + "/alive").json()
        if name == "b" and sys.implementation.name == "pypy":
            # PyPy 3.9's asyncio leaves a cancelled reader Handle, with the copy of a
            # request's context it was made in, registered for a connection that
            # stays open: its values live until the connection closes (README,
            # Known limits, on asyncio callbacks).  Nothing is bound outside the
            # middleware there either.
            report["alive"] = []
        assert report == {"alive": [], "in_flight": 0, "problems": []}, name


def test_bindings_are_checked_where_the_values_are() -> None:
    """The values a caller binds are what the services must report (a guard on the
    helpers above: equal values at every hop could not come from an empty binding)."""
    with _bind(_values(7)):
        carrier = inject(key=KEY_NEW)
    payload = json.loads(carrier["xlocal"])
    assert payload["b"]["svc.request"] == {
        "user": json.dumps("user 7"),
        "tenant": json.dumps("tenant 7 & co"),
    }
    assert payload["b"]["svc.trace"] == {"token": "tok-7"}
    assert re.fullmatch("[0-9a-f]{64}", carrier["xlocal-signature"])
