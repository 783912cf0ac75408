"""Leaks: long loops of binding, spawning, Locals and requests leave no memory behind.

Each case runs a warm-up, then many cycles under tracemalloc, and checks that the traced
memory is back where it was: a leak of even one small object per cycle would show as
many kilobytes.  Values bound along the way are watched with weak references.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import CPYTHON

import xlocal as xl
from xlocal import xlocal
from xlocal.asgi import XlocalMiddleware as ASGIMiddleware
from xlocal.local import Local, LocalManager, LocalProxy, LocalStack
from xlocal.wsgi import XlocalMiddleware as WSGIMiddleware

gevent = pytest.importorskip("gevent")

pytestmark = pytest.mark.cpython_only(
    "tracemalloc, which measures the growth, is CPython's"
)
if CPYTHON:  # PyPy has no tracemalloc; the mark skips the module there
    import tracemalloc

#: What traced memory may differ by after a loop, whatever its length: caches settle in
#: steps.  A leak of one small object per cycle is far above it.
SLACK = 16 * 1024


#: Allocations that count: those made by xlocal's code (its frames, tokens, contexts,
#: wrappers) and by this module (the values bound).  The interpreter's and tools' own,
#: such as a coverage tracer's state for each new thread, are left out.
OURS = [f"*{os.sep}xlocal{os.sep}*", __file__]


def traced() -> int:
    """Bytes currently allocated by xlocal and by this module, as tracemalloc sees."""
    ours = [tracemalloc.Filter(True, pattern) for pattern in OURS]
    snapshot = tracemalloc.take_snapshot().filter_traces(ours)
    return sum(stat.size for stat in snapshot.statistics("filename"))


def growth(cycle: Callable[[], Any], cycles: int) -> int:
    """Bytes of memory that *cycles* calls of *cycle* leave allocated by xlocal."""
    for _ in range(max(cycles // 10, WATCHED)):  # fills the watch lists, too
        cycle()
    gc.collect()
    tracemalloc.start()
    try:
        before = traced()
        for _ in range(cycles):
            cycle()
        gc.collect()
        return traced() - before
    finally:
        tracemalloc.stop()


class Value:
    """A bindable object that weak references can watch."""


@pytest.fixture
def refs() -> Iterator[list[weakref.ref[Value]]]:
    """Weak references to values made in a test; all must be dead at the end."""
    watched: list[weakref.ref[Value]] = []
    yield watched
    gc.collect()
    assert [r for r in watched if r() is not None] == []


#: How many values a test watches: the first ones made, during the warm-up, so that the
#: watch list does not grow while memory is measured.
WATCHED = 50


def value(refs: list[weakref.ref[Value]]) -> Value:
    v = Value()
    if len(refs) < WATCHED:
        refs.append(weakref.ref(v))
    return v


# -- the core --------------------------------------------------------------------------


def test_bind_and_unbind(xcurrent: xlocal, refs: list[weakref.ref[Value]]) -> None:
    """30,000 bind/unbind cycles of one name and 20,000 of five leave nothing."""

    def one() -> None:
        with xcurrent(a=value(refs)):
            xcurrent.a  # noqa: B018

    def five() -> None:
        v = value(refs)
        with xcurrent(a=v, b=v, c=v, d=v, e=v):
            xcurrent.e  # noqa: B018

    assert growth(one, 30_000) < SLACK
    assert growth(five, 20_000) < SLACK


def test_deep_nesting(xcurrent: xlocal, refs: list[weakref.ref[Value]]) -> None:
    """Binding ten levels deep, 3,000 times, leaves nothing."""

    def nest(depth: int = 10) -> None:
        if depth:
            with xcurrent(**{f"n{depth}": value(refs)}):
                nest(depth - 1)

    assert growth(nest, 3_000) < SLACK


def test_misuse(xcurrent: xlocal, refs: list[weakref.ref[Value]]) -> None:
    """5,000 out-of-order and repeated exits, each raising, leave nothing."""

    def misuse() -> None:
        outer, inner = xcurrent(a=value(refs)), xcurrent(b=value(refs))
        outer.__enter__()
        inner.__enter__()
        with contextlib.suppress(RuntimeError):
            outer.__exit__(None, None, None)
        with contextlib.suppress(RuntimeError):
            inner.__exit__(None, None, None)

    assert growth(misuse, 5_000) < SLACK


# -- carrying bindings -----------------------------------------------------------------


def test_wrap_and_capture(xcurrent: xlocal, refs: list[weakref.ref[Value]]) -> None:
    """20,000 wrapped calls and snapshot runs, binding inside, leave nothing."""

    def work() -> None:
        with xcurrent(inner=value(refs)):
            pass

    with xcurrent(outer=value(refs)):
        wrapped = xl.wrap(work)
        snapshot = xl.capture()

    def cycle() -> None:
        wrapped()
        snapshot.run(work)

    assert growth(cycle, 20_000) < SLACK


def test_isolated_generators(xcurrent: xlocal, refs: list[weakref.ref[Value]]) -> None:
    """10,000 isolated generators, finished or dropped mid-block, leave nothing."""

    @xl.isolated
    def gen() -> Iterator[int]:
        with xcurrent(v=value(refs)):
            yield 1
            yield 2

    def cycle() -> None:
        list(gen())
        next(gen())  # dropped while suspended inside its with-block

    assert growth(cycle, 10_000) < SLACK


def test_spawning_threads(xcurrent: xlocal, refs: list[weakref.ref[Value]]) -> None:
    """500 xlocal.Thread runs and 2,000 executor tasks leave nothing."""
    executor = xl.ContextExecutor(ThreadPoolExecutor(max_workers=4))

    def work() -> None:
        with xcurrent(inner=value(refs)):
            pass

    def spawn_thread() -> None:
        with xcurrent(outer=value(refs)):
            t = xl.Thread(target=work)
        t.start()
        t.join()

    def submit() -> None:
        with xcurrent(outer=value(refs)):
            executor.submit(work).result()

    with executor:
        assert growth(spawn_thread, 500) < SLACK
        assert growth(submit, 2_000) < SLACK


def test_spawning_greenlets_and_tasks(
    xcurrent: xlocal, refs: list[weakref.ref[Value]]
) -> None:
    """5,000 gevent greenlets and 5,000 asyncio tasks, each binding, leave nothing."""

    def work() -> None:
        with xcurrent(inner=value(refs)):
            gevent.sleep(0)

    def greenlets() -> None:
        with xcurrent(outer=value(refs)):
            jobs = [gevent.spawn(xl.wrap(work)) for _ in range(100)]
        gevent.joinall(jobs, raise_error=True)

    async def task() -> None:
        with xcurrent(inner=value(refs)):
            await asyncio.sleep(0)

    async def many_tasks() -> None:
        with xcurrent(outer=value(refs)):
            await asyncio.gather(*(task() for _ in range(100)))

    def tasks() -> None:
        asyncio.run(many_tasks())

    assert growth(greenlets, 50) < SLACK
    assert growth(tasks, 50) < SLACK


# -- the werkzeug-compatible layer and middleware --------------------------------------


def test_local_and_stack(refs: list[weakref.ref[Value]]) -> None:
    """30,000 Local set/delete and LocalStack push/pop cycles leave nothing."""
    local: Local = Local()
    stack: LocalStack[Value] = LocalStack()
    proxy: LocalProxy[Any] = local("v")

    def cycle() -> None:
        local.v = value(refs)
        proxy.__class__  # noqa: B018
        del local.v
        stack.push(value(refs))
        stack.top  # noqa: B018
        stack.pop()

    assert growth(cycle, 30_000) < SLACK


def test_local_manager_cleanup(refs: list[weakref.ref[Value]]) -> None:
    """Releasing through a LocalManager 20,000 times leaves nothing."""
    local, stack = Local(), LocalStack[Value]()
    manager = LocalManager([local, stack])

    def cycle() -> None:
        local.a = value(refs)
        local.b = value(refs)
        stack.push(value(refs))
        manager.cleanup()

    assert growth(cycle, 20_000) < SLACK


def test_wsgi_requests(xcurrent: xlocal, refs: list[weakref.ref[Value]]) -> None:
    """5,000 WSGI requests through the middleware leave nothing, closed or not."""
    local = Local()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        local.user = value(refs)
        start_response("200 OK", [])
        yield xcurrent.request.__class__.__name__.encode()

    wsgi = WSGIMiddleware(
        app, xcurrent, factories={"request": lambda e: value(refs)}, locals=[local]
    )

    def request() -> None:
        response = wsgi({"PATH_INFO": "/"}, lambda status, headers: None)
        assert list(response) == [b"Value"]
        response.close()  # type: ignore[attr-defined]

    def abandoned() -> None:
        response = wsgi({"PATH_INFO": "/"}, lambda status, headers: None)
        next(iter(response))

    assert growth(request, 5_000) < SLACK
    assert growth(abandoned, 5_000) < SLACK


def test_asgi_requests(xcurrent: xlocal, refs: list[weakref.ref[Value]]) -> None:
    """5,000 ASGI requests through the middleware leave nothing."""
    local = Local()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        local.user = value(refs)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        assert isinstance(xcurrent.request, Value)

    asgi = ASGIMiddleware(
        app,
        xcurrent,
        factories={"request": lambda scope, receive, send: value(refs)},
        locals=[local],
    )

    async def requests(n: int) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            pass

        for _ in range(n):
            await asgi({"type": "http", "path": "/"}, receive, send)

    def cycle() -> None:
        asyncio.run(requests(100))

    assert growth(cycle, 100) < SLACK


def test_threads_ending_inside_blocks(
    xcurrent: xlocal, refs: list[weakref.ref[Value]]
) -> None:
    """200 threads that end with bindings still entered leave nothing behind."""

    def leaky() -> None:
        xcurrent(v=value(refs)).__enter__()  # never exited: dies with the thread

    def cycle() -> None:
        t = threading.Thread(target=leaky)
        t.start()
        t.join()

    assert growth(cycle, 200) < SLACK
