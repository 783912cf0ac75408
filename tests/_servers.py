"""Real web servers run as subprocesses for the tests, and the clients that load them.

``serve(name, app)`` starts one of ``SERVERS`` on a listening socket that the test
made on a free loopback port and hands down, so no port is ever raced for; it yields
the port, and stops the server (SIGTERM, then SIGKILL) with timeouts.  ``extra``
arguments are added to the server's command line.  The server's output goes to a log
whose tail failed assertions show.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).parent
TIMEOUT = 30.0

#: How to run each server: the command after ``python``, with ``{fd}`` for the
#: listening socket's descriptor and ``{app}`` for ``module:attribute``.  Idle
#: keep-alive connections are kept a minute, longer than any test, so that no server
#: closes one just as the client reuses it.
_UVICORN = ["-m", "uvicorn", "--fd", "{fd}", "--lifespan", "off", "--log-level"]
_UVICORN += ["warning", "--no-access-log", "--timeout-keep-alive", "60"]
_UVICORN += ["--timeout-graceful-shutdown", "2", "{app}", "--http"]
_GUNICORN = ["-m", "gunicorn", "--bind", "fd://{fd}", "-w", "1", "--keep-alive", "60"]
_GUNICORN += ["--graceful-timeout", "2", "{app}", "-k"]
SERVERS: dict[str, tuple[str, list[str]]] = {
    "uvicorn-httptools": ("asgi", [*_UVICORN, "httptools"]),
    "uvicorn-h11": ("asgi", [*_UVICORN, "h11"]),
    "hypercorn": (
        "asgi",
        ["-m", "hypercorn", "--bind", "fd://{fd}", "--keep-alive", "60", "{app}"],
    ),
    "gunicorn-gthread": ("wsgi", [*_GUNICORN, "gthread", "--threads", "16"]),
    "gunicorn-gevent": ("wsgi", [*_GUNICORN, "gevent", "--worker-connections", "1000"]),
    "gevent-pywsgi": ("wsgi", [str(TESTS / "_web_app.py"), "{fd}"]),
}

ASGI_SERVERS = [name for name, (kind, _) in SERVERS.items() if kind == "asgi"]
WSGI_SERVERS = [name for name, (kind, _) in SERVERS.items() if kind == "wsgi"]


class Served:
    """A running server: its port, and its log for failure messages."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log

    def tail(self) -> str:
        """The last lines the server printed."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


@contextlib.contextmanager
def serve(
    name: str,
    app: str,
    path: Sequence[Path] = (),
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
) -> Iterator[Served]:
    """Run server *name* on a free loopback port, serving *app* (``module:attr``)."""
    command = [*SERVERS[name][1], *extra]
    if name == "gevent-pywsgi" and app != "_web_app:wsgi_app":
        pytest.fail("the gevent-pywsgi runner serves only _web_app:wsgi_app")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    fd = listener.fileno()
    port = listener.getsockname()[1]
    python_path = [str(p) for p in (*path, TESTS)] + sys.path
    environment = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(python_path),
        "PYTHONUNBUFFERED": "1",
    }
    with tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False) as log:
        process = subprocess.Popen(
            [sys.executable, *(part.format(fd=fd, app=app) for part in command)],
            pass_fds=[fd],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(TESTS),
        )
    listener.close()
    served = Served(port, Path(log.name))
    try:
        yield served
    finally:
        _stop(process)
        Path(log.name).unlink()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# -- Clients ---------------------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response: content-length or chunked."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines if line)
    }
    if "content-length" in headers:
        body = await asyncio.wait_for(
            reader.readexactly(int(headers["content-length"])), TIMEOUT
        )
    else:
        chunks = []
        while True:
            size = int(await asyncio.wait_for(reader.readline(), TIMEOUT), 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), TIMEOUT)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        body = b"".join(chunks)
    return int(status_line.split()[1]), body


async def pipelined(
    port: int, paths: Sequence[str], together: bool = True
) -> list[tuple[int, bytes]]:
    """Write all requests in one write on one connection, then read the responses.

    With *together* false, each request waits for the previous response instead.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    requests = [f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode() for path in paths]
    try:
        if together:
            writer.write(b"".join(requests))
            return [await read_response(reader) for _ in paths]
        responses = []
        for request in requests:
            writer.write(request)
            responses.append(await read_response(reader))
        return responses
    finally:
        writer.close()


def pipelines(server: str) -> bool:
    """Whether *server* answers pipelined requests: gunicorn's gthread worker before
    27 (the oldest checked that does) leaves those after the first unanswered."""
    if server != "gunicorn-gthread":
        return True
    import gunicorn  # noqa: PLC0415 - only asked about gunicorn

    return tuple(map(int, gunicorn.__version__.split(".")[:2])) >= (27, 0)


async def hang_up(port: int, path: str) -> None:
    """Request *path*, read the start of the response, and close the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        await asyncio.wait_for(reader.read(1), TIMEOUT)
    finally:
        writer.transport.abort()


async def stats(port: int, expect: int) -> dict[str, Any]:
    """The app's report once *expect* requests have ended, on a fresh connection."""
    [(status, body)] = await pipelined(port, [f"/stats?expect={expect}"])
    assert status == 200, body
    report: dict[str, Any] = json.loads(body)
    return report
