"""What carrying portable bindings adds to one HTTP hop, against the hop's own cost.

One request on loopback, over a kept-alive connection to a minimal HTTP/1.1 WSGI server
in a process of its own, as the next service is, whose app answers with the bound
``user_id`` (``-`` when none is bound, so that every request checks that it carried
what it should); sent by two clients, each two ways, all measured in rounds that
alternate their order, so that the machine's load falls on every way alike:

- ``http.client``: the standard library's client, as thin as a Python client gets;
- ``requests``: the client most services use, on a ``requests.Session``;
- each ``+ xlocal``: the same request carrying three small portable values, as
  ``xlocal.http`` carries them: the client adds the signed carrier
  (``xlocal.http.headers(key=...)`` for http.client, ``xlocal.http.install`` on the
  session), and the app is wrapped in ``xlocal.http.WSGIMiddleware(key=...)`` (check
  the signature, decode, bind for the request in its own context, unbind).

The figures of interest are the ratios of each client's two ways: what xlocal adds to a
hop, as a fraction of the hop.  The server is as thin as a Python one gets (no
framework, no logging), so that the fractions are upper bounds for a real service.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import multiprocessing
import multiprocessing.connection
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import xlocal.http
from xlocal import xlocal as make_xlocal
from xlocal.http import WSGIMiddleware
from xlocal.http import headers as carrier_headers

__all__ = ["CLIENTS", "Hop", "measure_hop", "way"]

#: The clients measured, each with and without xlocal.
CLIENTS = ("http.client", "requests")


def way(client: str, carry: bool) -> str:
    """The name of one way in the figures: ``requests`` or ``requests + xlocal``."""
    return f"{client} + xlocal" if carry else client


#: The secret both sides share: carriers are signed, as across services they should be.
KEY = b"benchmarks: shared by the client and the server"

#: The portable xlocal the measurement binds.
request = make_xlocal("benchmarks.hop.request", portable={"user_id", "tenant", "role"})

_TIMEOUT = 30.0
#: What the app answers, by whether the request carried the bindings.
_BODY = {False: b"-", True: b"7"}


@dataclass
class Hop:
    """Seconds per request of each way, one value per round."""

    rounds: int
    requests: int
    seconds: dict[str, list[float]] = field(default_factory=dict)


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The served app: answers the ``user_id`` bound, or ``-``."""
    body = str(getattr(request, "user_id", "-")).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def _handle(connection: socket.socket, app: Callable[..., Iterable[bytes]]) -> None:
    """Serve HTTP/1.1 requests without a body on *connection* until it closes."""
    rfile = connection.makefile("rb")
    status_headers: list[Any] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> None:
        status_headers[:] = [status, headers]

    try:
        while True:
            line = rfile.readline(65537)
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            path, _, query = target.partition("?")
            environ: dict[str, Any] = {
                "REQUEST_METHOD": method,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "0",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(),
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
            while True:
                header = rfile.readline(65537)
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.decode("latin-1").partition(":")
                environ["HTTP_" + name.strip().upper().replace("-", "_")] = (
                    value.strip()
                )
            response = app(environ, start_response)
            try:
                body = b"".join(response)
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()
            status, headers = status_headers
            head = f"HTTP/1.1 {status}\r\n" + "".join(
                f"{name}: {value}\r\n" for name, value in headers
            )
            connection.sendall(head.encode("latin-1") + b"\r\n" + body)
    finally:
        rfile.close()
        connection.close()


@contextlib.contextmanager
def _listening(app: Callable[..., Iterable[bytes]]) -> Iterator[int]:
    """A server of *app* on a free loopback port, one thread per connection; yields the
    port and stops when the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # the listener was closed: stop
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=_handle, args=(connection, app))
            thread.daemon = True
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        # shutdown wakes accept() where close alone would not (Linux).
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(_TIMEOUT)
        for thread in threads:
            thread.join(_TIMEOUT)


def _serve(carrying: bool, ports: Any, stop: Any) -> None:
    """The server process: serve the app, wrapped in xlocal's middleware when
    *carrying*, and send its port on *ports*; stop when *stop* is set."""
    app = WSGIMiddleware(_app, key=KEY) if carrying else _app
    with _listening(app) as port:
        ports.send(port)
        stop.wait()


@contextlib.contextmanager
def _server(carrying: bool) -> Iterator[int]:
    """A server process (see :func:`_serve`); yields its port, stops with the block."""
    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    stop = context.Event()
    process = context.Process(target=_serve, args=(carrying, there, stop))
    process.start()
    try:
        multiprocessing.connection.wait([here, process.sentinel], _TIMEOUT)
        if not here.poll():
            raise RuntimeError(
                f"the server process did not start (exit code {process.exitcode})"
            )
        yield here.recv()
    finally:
        stop.set()
        process.join(_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join(_TIMEOUT)
        here.close()
        there.close()


def _check(status: int, body: bytes, carry: bool) -> None:
    if status != 200 or body != _BODY[carry]:
        raise RuntimeError(
            f"the hop failed: {status} {body!r}, where {_BODY[carry]!r} was expected "
            f"(the bindings {'' if carry else 'not '}carried)"
        )


def _http_client(port: int, carry: bool) -> tuple[Callable[[], None], Any]:
    """One request on a kept-alive ``http.client`` connection to *port*, with the
    carrier's headers when *carry*; and the connection, to close."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=_TIMEOUT)

    def send() -> None:
        headers = carrier_headers(key=KEY) if carry else {}
        connection.request("GET", "/", headers=headers)
        response = connection.getresponse()
        _check(response.status, response.read(), carry)

    return send, connection


def _requests_client(port: int, carry: bool) -> tuple[Callable[[], None], Any]:
    """One request of a ``requests.Session`` to *port*, installed on when *carry*;
    and the session, to close."""
    import requests  # noqa: PLC0415 - a benchmark dependency, needed here only

    session = requests.Session()
    if carry:
        xlocal.http.install(session, key=KEY)
    url = f"http://127.0.0.1:{port}/"

    def send() -> None:
        response = session.get(url, timeout=_TIMEOUT)
        _check(response.status_code, response.content, carry)

    return send, session


_MAKERS = {"http.client": _http_client, "requests": _requests_client}


def measure_hop(rounds: int, requests: int) -> Hop:
    """Time every way, interleaved: *rounds* rounds of *requests* requests each."""
    names = [way(client, carry) for client in CLIENTS for carry in (False, True)]
    result = Hop(rounds, requests, {name: [] for name in names})
    with contextlib.ExitStack() as stack:
        ports = {carry: stack.enter_context(_server(carry)) for carry in (False, True)}
        ways: dict[str, Callable[[], None]] = {}
        for client in CLIENTS:
            for carry in (False, True):
                send, closable = _MAKERS[client](ports[carry], carry)
                stack.callback(closable.close)
                ways[way(client, carry)] = send
        with request(user_id=7, tenant="acme", role="admin"):
            for send in ways.values():  # connect, and warm every path up
                for _ in range(min(requests, 50)):
                    send()
            for turn in range(rounds):
                shift = turn % len(names)
                for name in names[shift:] + names[:shift]:
                    send = ways[name]
                    start = time.perf_counter()
                    for _ in range(requests):
                        send()
                    result.seconds[name].append(
                        (time.perf_counter() - start) / requests
                    )
    return result
