"""Shared fixtures: every test must leave no binding behind."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import subprocess
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import xlocal as xlocal_package
from xlocal import xlocal

# Hypothesis profiles, chosen with HYPOTHESIS_PROFILE: "ci" (the default) is
# deterministic and bounded to a few seconds; "long" draws many more random programs,
# with a fresh seed each run (hypothesis prints how to reproduce a failure).
settings.register_profile(
    "ci",
    max_examples=150,
    stateful_step_count=40,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=1000,
    stateful_step_count=80,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header() -> str:
    """Say which core the suite runs against (XLOCAL_NO_EXTENSIONS=1: the pure one)."""
    return f"xlocal core: {xlocal_package.IMPLEMENTATION}"


#: Every xlocal a test makes through the ``make_xlocal`` fixture, to check afterwards.
_made: weakref.WeakSet[xlocal] = weakref.WeakSet()


@pytest.fixture
def make_xlocal() -> Any:
    """Make xlocal objects whose emptiness is checked after the test."""

    def make(name: str | None = "xcurrent") -> xlocal:
        x = xlocal(name)
        _made.add(x)
        return x

    return make


@pytest.fixture
def xcurrent(make_xlocal: Any) -> xlocal:
    """A fresh xlocal named 'xcurrent'."""
    x: xlocal = make_xlocal("xcurrent")
    return x


@pytest.fixture(autouse=True)
def _nothing_left_bound() -> Iterator[None]:
    """Each test starts and ends with nothing bound in the test's own execution."""
    _made.clear()
    yield
    context = contextvars.copy_context()
    left = [x for x in _made if object.__getattribute__(x, "_var") in context]
    _made.clear()
    assert left == [], "left bound after the test"


# -- interpreters ----------------------------------------------------------------------
# The suite runs on CPython 3.9 to 3.13 and on PyPy 3 (tox.ini, .ci/run), and every test
# runs on all of them, except as follows.  Conventions for contributors:
#
# - A test that depends on a fact of CPython alone gets
#   ``@pytest.mark.cpython_only("the fact")`` (or ``pytestmark = ...`` for a module):
#   an object freed the moment its last reference goes, without the collector;
#   ``tracemalloc``; a C extension.  It runs on CPython and is skipped elsewhere, with
#   the reason shown.  Nothing else is skipped on PyPy.
# - A test that only needs dropped objects to be gone (a generator finalized, a value
#   released) calls ``collect()`` or ``collected(ref)`` after dropping them, instead of
#   relying on reference counting: PyPy frees garbage only when its collector runs.
# - A test that needs an optional dependency which does not install on some interpreter
#   uses ``pytest.importorskip(module, reason=...)``, naming it (none does today: every
#   test dependency installs on every interpreter above).
# - Python 3.9 is the oldest: no asyncio.TaskGroup, asyncio.timeout or
#   create_task(context=) (3.11), no ``match``; guard newer behaviour with
#   ``sys.version_info`` and test the older one too.

#: Whether this is CPython (``cpython_only`` tests run only there).
CPYTHON = sys.implementation.name == "cpython"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``cpython_only`` tests on other interpreters, saying what they need."""
    for mark in item.iter_markers("cpython_only"):
        if not mark.args or not isinstance(mark.args[0], str):
            raise TypeError(
                f"{item.nodeid}: cpython_only needs the reason as its argument: "
                f'@pytest.mark.cpython_only("the CPython-only fact it depends on")'
            )
        if not CPYTHON:
            pytest.skip(f"CPython only: {mark.args[0]}")


def collect() -> None:
    """Collect garbage, so that what was dropped is finalized and freed on any
    interpreter (PyPy frees what a finalizer kept reachable only on a later pass)."""
    for _ in range(3):
        gc.collect()


def collected(ref: weakref.ref[Any]) -> bool:
    """Whether the object behind *ref* is gone once garbage is collected."""
    collect()
    return ref() is None


def python(
    code: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter (this one, with *env* added to the
    environment), for what one process cannot undo, such as an import.  It runs in
    the tests' folder, so that ``import xlocal`` finds the installed package, not the
    source tree a run from the checkout's top would put first on the path (with no
    compiled core built in it)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _exchange(
    port: int, paths: list[str], timeout: float
) -> list[tuple[int, bytes]]:
    """GET each of *paths* in turn, on one connection while the server keeps it."""
    results: list[tuple[int, bytes]] = []
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        for path in paths:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            body = await asyncio.wait_for(
                reader.readexactly(int(headers["content-length"])), timeout
            )
            results.append((int(status_line.split()[1]), body))
            if headers.get("connection", "").lower() == "close" or "1.0" in status_line:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()
    return results


async def http_get_all(
    port: int, connections: list[list[str]], timeout: float = 30.0
) -> list[list[tuple[int, bytes]]]:
    """Open all *connections* at once to 127.0.0.1:*port*; each GETs its paths."""
    return list(
        await asyncio.gather(
            *(_exchange(port, paths, timeout) for paths in connections)
        )
    )


class HTTP:
    """An HTTP/1.1 client on loopback: ``http(port, connections)``, or async."""

    get_all_async = staticmethod(http_get_all)

    def __call__(
        self, port: int, connections: list[list[str]]
    ) -> list[list[tuple[int, bytes]]]:
        return asyncio.run(http_get_all(port, connections))


@pytest.fixture
def http() -> HTTP:
    """A client for the end-to-end tests against real servers."""
    return HTTP()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--web-load=N``: requests per server in the load test of test_servers.py."""
    parser.addoption(
        "--web-load",
        type=int,
        default=None,
        help="requests per server in the web servers' load test (default 2000, or "
        "XLOCAL_WEB_LOAD)",
    )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """A real redis-server on 127.0.0.1, shared by the tests that need a broker."""
    from engines import Redis  # noqa: PLC0415 - only the engine tests need it

    with Redis().running() as server:
        yield server


class Tagged:
    """A mixin taking a class keyword, to check that a library class that defines
    __init_subclass__ passes class keywords on to the other bases."""

    tag = ""

    def __init_subclass__(cls, tag: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.tag = tag
