"""The WSGI middleware: bindings for the whole request, under real servers too."""

from __future__ import annotations

import contextvars
import gc
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import _wsgi_app
import pytest
from raised import every_error

from xlocal import xlocal
from xlocal.local import Local, LocalManager, LocalStack
from xlocal.wsgi import ClosingIterable, XlocalMiddleware

Environ = dict[str, Any]

#: Concurrent connections in the end-to-end tests; each sends two requests.
CONNECTIONS = 200


def _start_response(status: str, headers: list[tuple[str, str]]) -> Callable[..., Any]:
    return lambda data: None


class _Req:
    """A request object made from the environ."""

    made = 0

    def __init__(self, environ: Environ) -> None:
        _Req.made += 1
        self.path = environ["PATH_INFO"]


def _reader(x: xlocal, seen: list[Any]) -> Callable[[Environ, Any], Iterable[bytes]]:
    """An app whose response records what xcurrent holds at each step."""

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            seen.append(("iter", x.request.path, x.environ["PATH_INFO"]))
            yield b"a"
            seen.append(("next", x.request.path))
            yield b"b"

        def close(self) -> None:
            seen.append(("close", x.request.path))

    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        seen.append(("app", x.request.path, x.environ is environ))
        start_response("200 OK", [])
        return Body()

    return app


def test_binds_for_app_iteration_and_close(xcurrent: xlocal) -> None:
    """The environ and the factory's object are bound in the app, body and close."""
    seen: list[Any] = []
    app = XlocalMiddleware(
        _reader(xcurrent, seen), xcurrent, factories={"request": _Req}
    )
    before = _Req.made
    response = app({"PATH_INFO": "/a"}, _start_response)
    assert dir(xcurrent) == []
    assert list(response) == [b"a", b"b"]
    assert dir(xcurrent) == []
    response.close()  # type: ignore[attr-defined]
    assert seen == [
        ("app", "/a", True),
        ("iter", "/a", "/a"),
        ("next", "/a"),
        ("close", "/a"),
    ]
    assert _Req.made == before + 1


def test_generator_app_is_bound(xcurrent: xlocal) -> None:
    """A generator app, run only when the server iterates, sees the binding."""

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield xcurrent.environ["PATH_INFO"].encode()

    response = XlocalMiddleware(app, xcurrent)({"PATH_INFO": "/g"}, _start_response)
    assert list(response) == [b"/g"]
    response.close()  # type: ignore[attr-defined]


def test_interleaved_responses_stay_apart(xcurrent: xlocal) -> None:
    """Two responses iterated in turn in one thread each see their own request."""
    seen: list[Any] = []
    app = XlocalMiddleware(
        _reader(xcurrent, seen), xcurrent, factories={"request": _Req}
    )
    first = iter(app({"PATH_INFO": "/1"}, _start_response))
    second = iter(app({"PATH_INFO": "/2"}, _start_response))
    next(first)
    next(second)
    next(first)
    next(second)
    assert [step[:2] for step in seen[2:]] == [
        ("iter", "/1"),
        ("iter", "/2"),
        ("next", "/1"),
        ("next", "/2"),
    ]
    first.close()  # type: ignore[attr-defined]
    second.close()  # type: ignore[attr-defined]


def test_locals_released_and_kept_from_server(xcurrent: xlocal) -> None:
    """Locals the app sets stay in its request and are released when it closes."""
    local = Local()
    stack: LocalStack[int] = LocalStack()
    managed = Local()
    seen: list[Any] = []

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        local.value = stack.push(1)
        managed.value = 2
        yield b""
        seen.append((list(local), stack.top, list(managed)))

    wrapped = XlocalMiddleware(
        app, xcurrent, locals=[local, stack, LocalManager([managed])]
    )
    response = wrapped({}, _start_response)
    list(response)
    assert seen == [([("value", [1])], 1, [("value", 2)])]
    assert list(local) == []
    response.close()  # type: ignore[attr-defined]
    assert list(local) == []
    assert stack.top is None


def test_unclosed_response_leaks_nothing(xcurrent: xlocal) -> None:
    """A response the server never closes leaves nothing bound in the server."""
    local = Local()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        local.value = 1
        return [b"x"]

    response = XlocalMiddleware(app, xcurrent)({}, _start_response)
    assert list(response) == [b"x"]
    assert dir(xcurrent) == []
    assert list(local) == []


@pytest.mark.parametrize("where", ["here", "thread"])
def test_abandoned_response_is_closed_in_its_request(
    xcurrent: xlocal, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partly iterated response dropped unclosed is closed in its request, quietly."""
    local = Local()
    seen: list[Any] = []
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        value = _Value()
        seen.append(weakref.ref(value))
        local.value = value
        start_response("200 OK", [])
        with xcurrent(user="app"):
            try:
                yield b"a"
                yield b"b"
            finally:
                seen.append(
                    (xcurrent.user, xcurrent.environ["PATH_INFO"], local.value is value)
                )

    response = XlocalMiddleware(app, xcurrent, locals=[local])(
        {"PATH_INFO": "/p"}, _start_response
    )
    assert next(iter(response)) == b"a"
    if where == "thread":
        holder = [response]
        del response
        thread = threading.Thread(target=holder.clear)
        thread.start()
        thread.join(10)
    else:
        del response
    gc.collect()  # finalizes what is dropped (PyPy frees it at the next)
    gc.collect()
    assert unraisable == []
    assert seen[1:] == [("app", "/p", True)]
    assert seen[0]() is None
    assert dir(xcurrent) == []
    assert list(local) == []


def test_app_error_exits_binding(xcurrent: xlocal) -> None:
    """If the app raises, the binding is exited, the locals released, the error kept."""
    local = Local()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        local.value = xcurrent.environ["id"]
        raise LookupError("boom")

    wrapped = XlocalMiddleware(app, xcurrent, locals=[local])
    context = contextvars.copy_context()
    with pytest.raises(LookupError, match=r"^boom$"):
        context.run(wrapped, {"id": 1}, _start_response)
    assert context.run(dir, xcurrent) == []
    assert list(local) == []


def test_iteration_error_then_close(xcurrent: xlocal) -> None:
    """An error while iterating propagates; close() still exits the binding."""
    closed: list[str] = []

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        try:
            yield b"a"
            raise ValueError("in body")
        finally:
            closed.append(xcurrent.environ["PATH_INFO"])

    response = XlocalMiddleware(app, xcurrent)({"PATH_INFO": "/e"}, _start_response)
    with pytest.raises(ValueError, match=r"^in body$"):
        list(response)
    response.close()  # type: ignore[attr-defined]
    assert closed == ["/e"]


def test_environ_name_optional(xcurrent: xlocal) -> None:
    """environ=None binds only the factories' values; names are checked at once."""
    seen: list[Any] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        seen.append(dir(xcurrent))
        return []

    wrapped = XlocalMiddleware(app, xcurrent, environ=None, factories={"req": _Req})
    wrapped({"PATH_INFO": "/"}, _start_response).close()  # type: ignore[attr-defined]
    assert seen == [["req"]]


def test_misuse_messages(xcurrent: xlocal) -> None:
    """Wrong arguments are refused when the middleware is made."""
    with pytest.raises(
        TypeError, match=r"^XlocalMiddleware binds on an xlocal, not on a Local$"
    ):
        XlocalMiddleware(_reader(xcurrent, []), Local())  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"^cannot bind 'environ' twice: it is both the environ's name and a "
        r"factory's$",
    ):
        XlocalMiddleware(_reader(xcurrent, []), xcurrent, factories={"environ": _Req})
    with pytest.raises(ValueError, match=r"^cannot bind '_req' on <xlocal 'xcurrent'>"):
        XlocalMiddleware(_reader(xcurrent, []), xcurrent, factories={"_req": _Req})
    with pytest.raises(ValueError, match=r"^cannot bind '' on <xlocal 'xcurrent'>"):
        XlocalMiddleware(_reader(xcurrent, []), xcurrent, environ="")


#: Bad arguments of the middleware, and the start of the message each gets.
_BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    (
        {"app": "app"},
        r"XlocalMiddleware\(app=\.\.\.\) takes the WSGI application to wrap, a "
        r"callable, not str$",
    ),
    (
        {"factories": {"request": "Request"}},
        r"XlocalMiddleware\(factories=\.\.\.\): the factory for 'request' is "
        r"str, not a callable; give a callable that makes the value from the environ$",
    ),
    (
        {"factories": [("request", _Req)]},
        r"XlocalMiddleware\(factories=\.\.\.\) takes a "
        r"mapping of names to callables, as in factories=\{'request': Request\}, not "
        r"list$",
    ),
    (
        {"factories": {1: _Req}},
        r"XlocalMiddleware\(factories=\.\.\.\) takes names as "
        r"str keys, not 1$",
    ),
    (
        {"environ": 1},
        r"XlocalMiddleware\(environ=\.\.\.\) takes the name to bind the "
        r"environ under, or None, not int$",
    ),
    (
        {"locals": [3]},
        r"XlocalMiddleware\(locals=\.\.\.\) takes Local, LocalStack and "
        r"LocalManager objects, not int$",
    ),
    (
        {"locals": [Local()("user")]},
        r"XlocalMiddleware\(locals=\.\.\.\) takes Local, "
        r"LocalStack and LocalManager objects, not LocalProxy: give the Local or "
        r"LocalStack it proxies$",
    ),
    (
        {"locals": [xlocal("other")]},
        r"XlocalMiddleware\(locals=\.\.\.\) takes Local, "
        r"LocalStack and LocalManager objects, not xlocal: its bindings end with their "
        r"with-blocks and need no release$",
    ),
    (
        {"locals": [Local]},
        r"XlocalMiddleware\(locals=\.\.\.\) takes Local, LocalStack and LocalManager "
        r"objects, not the class Local: give an instance, Local\(\)$",
    ),
    (
        {"locals": LocalStack},
        r"XlocalMiddleware\(locals=\.\.\.\) takes a Local, LocalStack or "
        r"LocalManager, or a list of them, not the class LocalStack: give an "
        r"instance, LocalStack\(\)$",
    ),
    (
        {"locals": 3},
        r"XlocalMiddleware\(locals=\.\.\.\) takes a Local, LocalStack or "
        r"LocalManager, or a list of them, not int$",
    ),
    (
        {"locals": "local"},
        r"XlocalMiddleware\(locals=\.\.\.\) takes a Local, "
        r"LocalStack or LocalManager, or a list of them, not str$",
    ),
]


@pytest.mark.parametrize(
    ("arguments", "message"), _BAD_ARGUMENTS, ids=lambda a: str(a)[:40]
)
def test_arguments_checked_when_built(
    xcurrent: xlocal, arguments: dict[str, Any], message: str
) -> None:
    """Bad apps, factories, names and locals are refused at once, naming them."""
    arguments = {"app": _reader(xcurrent, []), **arguments}
    with pytest.raises(TypeError, match=f"^{message}"):
        XlocalMiddleware(x=xcurrent, **arguments)


class _Value:
    """A value stored by a request, to see when it is freed."""


@pytest.mark.parametrize("kind", ["Local", "LocalStack", "LocalManager"])
def test_single_store_is_released(xcurrent: xlocal, kind: str) -> None:
    """locals= takes one Local, LocalStack or LocalManager as well as a list of them."""
    local = Local()
    stack: LocalStack[_Value] = LocalStack()
    store = {"Local": local, "LocalStack": stack, "LocalManager": LocalManager(local)}
    refs: list[weakref.ref[_Value]] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        value = _Value()
        refs.append(weakref.ref(value))
        if kind == "LocalStack":
            stack.push(value)
        else:
            local.value = value
        return [b"x"]

    response = XlocalMiddleware(app, xcurrent, locals=store[kind])({}, _start_response)
    assert list(response) == [b"x"]
    response.close()  # type: ignore[attr-defined]
    # The response keeps its request's Context alive: only a release frees the value.
    gc.collect()  # finalizes what is dropped (PyPy frees it at the next)
    gc.collect()
    assert refs[0]() is None
    assert response is not None


def test_closing_iterable_runs_callbacks_once() -> None:
    """ClosingIterable closes the response, then runs every callback, once."""
    calls: list[str] = []

    class Response(list[bytes]):
        def close(self) -> None:
            calls.append("response")

    def failing() -> None:
        calls.append("failing")
        raise OSError("callback")

    closing = ClosingIterable(Response([b"x"]), failing, lambda: calls.append("last"))
    assert list(closing) == [b"x"]
    with pytest.raises(OSError, match=r"^callback$"):
        closing.close()
    closing.close()
    assert calls == ["response", "failing", "last"]


class _FailingStore:
    """A store whose release fails with an error naming it, once armed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.armed = False
        self.released = 0

    def __release_local__(self) -> None:
        self.released += 1
        if self.armed:
            raise OSError(f"{self.name} failed")


def test_closing_raises_every_error() -> None:
    """When the response's close and callbacks fail, all run and every error is
    raised together, the response's first; one error is raised as it is; for
    ClosingIterable and werkzeug's ClosingIterator."""
    from xlocal.local import ClosingIterator  # noqa: PLC0415 - werkzeug's place

    calls: list[str] = []

    class Response(list[bytes]):
        def close(self) -> None:
            calls.append("response")
            raise OSError("response failed")

    def failing() -> None:
        calls.append("callback")
        raise LookupError(f"callback {calls.count('callback')} failed")

    for closing in (
        ClosingIterable(Response([b"x"]), failing, failing),
        ClosingIterator(Response([b"x"]), [failing, failing]),
    ):
        calls.clear()
        with pytest.raises(BaseException) as raised:
            closing.close()
        assert every_error(raised.value) == [
            "OSError: response failed",
            "LookupError: callback 1 failed",
            "LookupError: callback 2 failed",
        ]
        assert calls == ["response", "callback", "callback"]
    calls.clear()
    with pytest.raises(LookupError, match=r"^callback 1 failed$"):
        ClosingIterable([b"x"], failing, lambda: calls.append("last")).close()
    assert calls == ["callback", "last"]


def test_middleware_raises_every_release_error_after_the_apps(
    xcurrent: xlocal,
) -> None:
    """When the app raises and releasing the request's stores raises too, every error
    comes out, the app's first; when only the stores fail, all of theirs do.  Each
    store is tried, once the response is closed or the app has raised."""
    stores = [_FailingStore("first"), _FailingStore("second")]

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        for store in stores:
            store.armed = environ.get("armed", True)
        if environ.get("fail"):
            raise LookupError("app failed")
        return [b"ok"]

    wrapped = XlocalMiddleware(app, xcurrent, locals=stores)  # type: ignore[arg-type]
    response = wrapped({}, _start_response)
    with pytest.raises(BaseException) as raised:
        response.close()  # type: ignore[attr-defined]
    assert every_error(raised.value) == [
        "OSError: first failed",
        "OSError: second failed",
    ]
    assert [store.released for store in stores] == [2, 2]
    for store in stores:
        store.armed = False
    with pytest.raises(BaseException) as raised:
        wrapped({"fail": True}, _start_response)
    assert every_error(raised.value) == [
        "LookupError: app failed",
        "OSError: first failed",
        "OSError: second failed",
    ]
    assert [store.released for store in stores] == [4, 4]
    for store in stores:
        store.armed = False
    with pytest.raises(BaseException) as raised:
        wrapped({"fail": True, "armed": False}, _start_response)
    assert isinstance(raised.value, LookupError)  # the app's alone, as it raised it
    wrapped_one = XlocalMiddleware(app, xcurrent, locals=stores[1:])  # type: ignore[arg-type]
    with pytest.raises(BaseException) as raised:
        wrapped_one({"fail": True}, _start_response)
    assert every_error(raised.value) == [
        "LookupError: app failed",
        "OSError: second failed",
    ]


def test_repr(xcurrent: xlocal) -> None:
    """The middleware's repr names the app and the xlocal."""
    app = _reader(xcurrent, [])
    assert repr(XlocalMiddleware(app, xcurrent)) == (
        f"<XlocalMiddleware {app!r} on <xlocal 'xcurrent' unbound>>"
    )


# -- End to end, under real servers ----------------------------------------------------


def _connections() -> list[list[str]]:
    """Each connection: a gated request, then an ungated one on the same connection."""
    return [[f"/?id={i}", f"/?id={CONNECTIONS + i}"] for i in range(CONNECTIONS)]


def _check(results: list[list[tuple[int, bytes]]], stats: dict[str, Any]) -> None:
    """Every response carries its own id everywhere; nothing was left bound."""
    for i, exchange in enumerate(results):
        for request_id, (status, body) in zip((i, CONNECTIONS + i), exchange):
            assert status == 200
            own = f"{request_id:06d}"
            assert body.decode() == f"{own}|{own}|{own}|{own}|{own}|"
    assert stats == {"closed": 2 * CONNECTIONS, "problems": []}


def _stats(http: Any, port: int) -> dict[str, Any]:
    [[(status, body)]] = http(port, [["/stats"]])
    assert status == 200
    stats: dict[str, Any] = json.loads(body)
    return stats


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 4 * CONNECTIONS


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_threaded_server_end_to_end(http: Any) -> None:
    """Under a threaded wsgiref server, 400 requests each see their own values."""
    server = _wsgi_app.Server(CONNECTIONS)
    httpd = make_server(
        "127.0.0.1",
        0,
        server.app,
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}
    )
    thread.start()
    try:
        port = httpd.server_address[1]
        results = http(port, _connections())
        _check(results, _stats(http, port))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
    assert not thread.is_alive()


def test_gevent_server_end_to_end(http: Any) -> None:
    """Under gevent's WSGI server (monkey-patched, in a subprocess), no cross-talk."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4 * CONNECTIONS)
    port = listener.getsockname()[1]
    script = Path(_wsgi_app.__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, str(script), str(listener.fileno()), str(CONNECTIONS)],
        pass_fds=[listener.fileno()],
        env=env,
    )
    listener.close()
    try:
        results = http(port, _connections())
        _check(results, _stats(http, port))
        http(port, [["/shutdown"]])
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.parametrize("wrapping", ["none", "XlocalMiddleware", "make_middleware"])
def test_reused_server_thread(http: Any, xcurrent: xlocal, wrapping: str) -> None:
    """A server thread reused for the next request keeps Local data unless wrapped."""
    local = Local()
    threads: set[int] = set()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        threads.add(threading.get_ident())
        before = getattr(local, "user", "none")
        local.user = environ["QUERY_STRING"]
        body = before.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    wrapped = {
        "none": app,
        "XlocalMiddleware": XlocalMiddleware(app, xcurrent),
        "make_middleware": LocalManager([local]).make_middleware(app),
    }[wrapping]
    # wsgiref's plain WSGIServer serves every request in the one thread that serves.
    httpd = make_server("127.0.0.1", 0, wrapped, handler_class=_QuietHandler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}
    )
    thread.start()
    try:
        port = httpd.server_address[1]
        [[first]] = http(port, [["/?ann"]])
        [[second]] = http(port, [["/?bob"]])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
    assert len(threads) == 1
    assert first == (200, b"none")
    assert second == (200, b"ann" if wrapping == "none" else b"none")


# -- The server's wsgi.file_wrapper ----------------------------------------------------


class _FileWrapper:
    """A server's file wrapper, as wsgiref's and gunicorn's: filelike and blksize."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.filelike.read(self.blksize), b"")

    def close(self) -> None:
        self.filelike.close()


class _SlottedWrapper:
    """A file wrapper that refuses new attributes (and so a new close)."""

    __slots__ = ("blksize", "filelike")

    __init__ = _FileWrapper.__init__
    __iter__ = _FileWrapper.__iter__
    close = _FileWrapper.close


class _File:
    """A file that says what was bound when it was closed."""

    def __init__(self, x: xlocal, seen: list[Any]) -> None:
        self._x = x
        self._seen = seen
        self._data = [b"", b"data"]

    def read(self, size: int) -> bytes:
        return self._data.pop()

    def close(self) -> None:
        self._seen.append(dir(self._x))


@pytest.mark.parametrize("wrapper", [_FileWrapper, _SlottedWrapper])
def test_file_wrapper_handed_back(xcurrent: xlocal, wrapper: type[Any]) -> None:
    """The server's own file wrapper comes back unwrapped, and closes in the request."""
    seen: list[Any] = []

    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](_File(xcurrent, seen))

    wrapped = XlocalMiddleware(app, xcurrent)
    environ = {"wsgi.file_wrapper": wrapper, "PATH_INFO": "/"}
    response = wrapped(environ, _start_response)
    assert isinstance(response, wrapper) is (wrapper is _FileWrapper)
    assert list(response) == [b"data"]
    assert dir(xcurrent) == []
    response.close()  # type: ignore[attr-defined]
    response.close()  # type: ignore[attr-defined]
    assert seen == [["environ"]]


def test_file_wrapper_without_close(xcurrent: xlocal) -> None:
    """A file wrapper with no close of its own still ends the request when closed."""
    local = Local()

    class Bare:
        def __init__(self, filelike: Any) -> None:
            self.filelike = filelike

        def __iter__(self) -> Iterator[bytes]:
            return iter([b"data"])

    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        local.value = 1
        start_response("200 OK", [])
        return Bare(None)

    wrapped = XlocalMiddleware(app, xcurrent, locals=[local])
    response = wrapped({"wsgi.file_wrapper": Bare, "PATH_INFO": "/"}, _start_response)
    assert isinstance(response, Bare)
    response.close()  # type: ignore[attr-defined]
    assert list(local) == []
