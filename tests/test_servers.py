"""The middleware under real servers, as production runs them, in subprocesses.

Each server serves ``_web_app`` on a loopback port; the app checks from the inside that
every request sees only its own values and reports what it saw at ``/stats``, with the
request values still alive after a garbage collection.  ``--web-load=N`` (or
``XLOCAL_WEB_LOAD=N``) sets the requests per server of the load test (default 2,000).
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import httpx
import pytest
from _servers import (
    ASGI_SERVERS,
    SERVERS,
    WSGI_SERVERS,
    hang_up,
    pipelined,
    pipelines,
    serve,
    stats,
)

APPS = {"asgi": "_web_app:asgi_app", "wsgi": "_web_app:wsgi_app"}
CONCURRENCY = 50


def _app(server: str) -> str:
    return APPS[SERVERS[server][0]]


def _own(request_id: int, body: bytes) -> bool:
    """Whether every id in *body* is *request_id*."""
    ids = {part for part in body.decode().split("|") if part}
    return ids == {f"{request_id:06d}"}


@pytest.mark.parametrize("server", SERVERS)
def test_pipelined_requests_start_clean(server: str) -> None:
    """Pipelined requests on one connection never see the previous one's bindings."""
    if not pipelines(server):
        pytest.skip("this gunicorn's gthread worker does not answer pipelined requests")

    async def main() -> tuple[list[list[tuple[int, bytes]]], dict[str, Any]]:
        with serve(server, _app(server)) as served:
            batches = [
                [f"/?id={10 * c + i}&auth={i % 2}" for i in range(6)] for c in range(4)
            ]
            results = await asyncio.gather(
                *(pipelined(served.port, paths) for paths in batches)
            )
            report = await stats(served.port, 24)
            return list(results), report

    results, report = asyncio.run(main())
    for c, batch in enumerate(results):
        for i, (status, body) in enumerate(batch):
            assert status == 200
            assert _own(10 * c + i, body), body
    assert report["problems"] == []
    assert report["alive"] == []


@pytest.mark.parametrize("server", SERVERS)
def test_values_die_with_the_request(server: str) -> None:
    """No request value stays alive while its connection idles in keep-alive."""

    async def main() -> dict[str, Any]:
        with serve(server, _app(server)) as served:
            limits = httpx.Limits(max_keepalive_connections=8)
            url = f"http://127.0.0.1:{served.port}"
            async with httpx.AsyncClient(base_url=url, limits=limits) as client:
                for request_id in range(8):
                    path = "/stream" if request_id % 2 else "/"
                    response = await client.get(
                        f"{path}?id={request_id}&auth=1", timeout=30
                    )
                    assert response.status_code == 200
                    assert _own(request_id, response.content)
                # the client's connections idle, open, while the app reports
                return await stats(served.port, 8)

    report = asyncio.run(main())
    assert report["problems"] == []
    assert report["alive"] == []


@pytest.mark.parametrize("server", ["gunicorn-gthread", "gunicorn-gevent"])
def test_file_wrapper_is_sent_with_sendfile(server: str) -> None:
    """A response made with the server's wsgi.file_wrapper reaches it for sendfile."""

    async def main() -> tuple[list[bytes], dict[str, Any]]:
        with serve(server, _app(server)) as served:
            url = f"http://127.0.0.1:{served.port}"
            async with httpx.AsyncClient(base_url=url) as client:
                bodies = [
                    (await client.get(f"/file?id={i}", timeout=30)).content
                    for i in range(3)
                ]
            return bodies, await stats(served.port, 3)

    bodies, report = asyncio.run(main())
    for request_id, body in enumerate(bodies):
        assert body == f"{request_id:06d}|".encode() * 1000
    assert "fileno" in report["reads"]  # only sendfile asks for it
    if server == "gunicorn-gthread":  # gevent's sendfile reads and sends
        assert "read" not in report["reads"]
    assert report["problems"] == []
    assert report["alive"] == []


# -- Load ------------------------------------------------------------------------------


def _load_size(config: pytest.Config) -> int:
    option = config.getoption("--web-load", None)
    return int(option or os.environ.get("XLOCAL_WEB_LOAD") or 2000)


async def _load(port: int, total: int, together: bool) -> tuple[int, int, int]:
    """Send *total* requests, CONCURRENCY at a time, of every kind; check bodies.

    Returns (requests the app got, injected failures seen, unexpected failures).
    Four requests at a time go *together* in one write, or else one by one on one
    connection.
    """
    rng = random.Random(total)
    next_id = 0
    sent = failed = wrong = 0
    semaphore = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY)
    url = f"http://127.0.0.1:{port}"

    async def one(client: httpx.AsyncClient, kind: int, request_id: int) -> None:
        nonlocal sent, failed, wrong
        auth = request_id % 2
        if kind < 5:
            response = await client.get(f"/?id={request_id}&auth={auth}")
            ok = response.status_code == 200 and _own(request_id, response.content)
            sent += 1
        elif kind < 7:
            path = f"/stream?id={request_id}&chunks=4&auth={auth}"
            async with client.stream("GET", path) as response:
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
            ok = response.status_code == 200 and _own(request_id, body)
            sent += 1
        elif kind == 7:
            sent += 1
            try:
                response = await client.get(f"/stream?id={request_id}&fail=1")
            except httpx.HTTPError:
                failed += 1
                return
            ok = False
        elif kind == 8:
            ids = range(request_id, request_id + 4)
            paths = [f"/?id={i}&auth={i % 2}" for i in ids]
            responses = await pipelined(port, paths, together)
            sent += 4
            ok = all(s == 200 and _own(i, b) for i, (s, b) in zip(ids, responses))
        else:
            sent += 1
            await hang_up(port, f"/stream?id={request_id}&hang=1&auth={auth}")
            ok = True
        if not ok:
            wrong += 1

    async def guarded(client: httpx.AsyncClient, kind: int, request_id: int) -> None:
        async with semaphore:
            await one(client, kind, request_id)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        jobs = []
        while next_id < total:
            kind = rng.randrange(10)
            jobs.append(guarded(client, kind, next_id))
            next_id += 4 if kind == 8 else 1
        await asyncio.gather(*jobs)
    return sent, failed, wrong


@pytest.mark.parametrize("server", SERVERS)
def test_load(server: str, pytestconfig: pytest.Config) -> None:
    """Thousands of mixed requests: no cross-talk, no error but the injected ones."""
    total = _load_size(pytestconfig)

    async def main() -> tuple[tuple[int, int, int], dict[str, Any], str]:
        with serve(server, _app(server)) as served:
            counts = await _load(served.port, total, pipelines(server))
            return counts, await stats(served.port, counts[0]), served.tail()

    (sent, failed, wrong), report, log = asyncio.run(main())
    assert report["problems"] == []
    assert wrong == 0, log[-3000:]
    assert report["ended"] == sent
    assert failed > 0
    assert report["alive"] == []


def test_servers_cover_both_protocols() -> None:
    """The load runs under ASGI and WSGI servers alike."""
    assert len(ASGI_SERVERS) == 3
    assert len(WSGI_SERVERS) == 3
