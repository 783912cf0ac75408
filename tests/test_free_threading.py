"""Free-threaded CPython (PEP 703, supported from 3.14 by PEP 779): shared state under
real parallelism.

These tests run only where the GIL is off: ``sys._is_gil_enabled()`` is False, as on a
free-threaded build (``python3.14t``) not started with ``-X gil=1``.  Elsewhere they
are skipped, saying so; ``XLOCAL_FREE_THREADING_TESTS=1`` runs them with the GIL too,
which checks the tests themselves.  Each one hammers, from threads released together
by a barrier, one of the places of shared mutable state that README.txt lists under
"Free-threaded Python", and checks what the GIL made hard to break before.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Annotated, Any, Callable  # noqa: F401 - Annotated: see Racing

import pytest

import xlocal
from xlocal import xlocal as make
from xlocal._core import _VALID_NAMES_CAP, _valid_names
from xlocal._registry import _portables
from xlocal.local import LocalStack
from xlocal.portable import CARRIER_KEY, extract, inject

GIL_OFF = not getattr(sys, "_is_gil_enabled", lambda: True)()

pytestmark = pytest.mark.skipif(
    not GIL_OFF and os.environ.get("XLOCAL_FREE_THREADING_TESTS") != "1",
    reason="free-threaded CPython with the GIL off only "
    "(XLOCAL_FREE_THREADING_TESTS=1 runs these with the GIL)",
)

TIMEOUT = 120
THREADS = 8
ROUNDS = 2000


def together(work: Callable[[int], None], threads: int = THREADS) -> None:
    """Run ``work(i)`` in *threads* threads released at once; raise the first error."""
    barrier = threading.Barrier(threads, timeout=TIMEOUT)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as error:  # reported by the runner
            errors.append(error)

    units = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # with the GIL: switch threads as often as it can
    try:
        for unit in units:
            unit.start()
        for unit in units:
            unit.join(TIMEOUT)
    finally:
        sys.setswitchinterval(interval)
    assert not any(unit.is_alive() for unit in units)
    if errors:
        raise errors[0]


def test_the_pure_core_runs_free_threaded() -> None:
    """Free-threaded builds get the pure core: setup.py builds no extension there
    until the compiled core is proven thread-safe."""
    if GIL_OFF:
        assert xlocal.IMPLEMENTATION == "python"


def test_one_binding_entered_by_every_thread_at_once() -> None:
    """One binding object entered and exited by many threads at once keeps each
    entry apart (its open entries are one dict shared by the threads), and each
    thread sees only its own nested binding."""
    x = make("free.shared")
    shared = x(role="shared")

    def work(i: int) -> None:
        for n in range(ROUNDS):
            with shared, x(owner=i, n=n):
                assert (x.role, x.owner, x.n) == ("shared", i, n)
                with shared:
                    assert (x.owner, x.n) == (i, n)
            assert dir(x) == []

    together(work)
    assert shared._entries == {}  # type: ignore[attr-defined]


def test_new_names_from_every_thread_at_once() -> None:
    """Names checked for the first time by many threads at once (the cache of valid
    names) are all bound and read back, and the cache stays near its cap."""
    x = make("free.names")

    def work(i: int) -> None:
        for n in range(ROUNDS // 4):
            name = f"free_{i}_{n}"
            with x(**{name: n}):
                assert getattr(x, name) == n

    together(work)
    assert len(_valid_names) <= _VALID_NAMES_CAP + THREADS


def test_portable_names_freed_and_taken_at_once() -> None:
    """Threads that make and drop portable xlocals of one name, each waiting until
    the name is free, always find their own entry in the registry: the collector's
    removal of a dead xlocal's entry never removes a newer one."""
    name = "free.portable"
    lost: list[int] = []

    def work(i: int) -> None:
        for n in range(ROUNDS // 4):
            while True:
                try:
                    x = make(name, portable=True)
                    break
                except ValueError:  # the name is another thread's for now
                    continue
            with x(owner=i, n=n):
                carrier = inject()
            entry = _portables.get(name)
            if entry is None or entry() is not x:
                lost.append(n)
            del x
            assert CARRIER_KEY in carrier

    together(work, threads=4)
    assert lost == []
    assert name not in _portables


class Counted:
    """A codec that counts how many of it are made."""

    made = 0
    lock = threading.Lock()

    def __init__(self) -> None:
        with Counted.lock:
            Counted.made += 1

    def encode(self, value: Any) -> str:
        return str(value)

    def decode(self, text: str) -> Any:
        return int(text)


def test_declared_codec_read_once_by_every_thread_at_once() -> None:
    """A typed namespace's declared codecs, read at its first carrier, are read once
    when many threads make its first carriers at once: they all use one codec."""
    # A string, as ``from __future__ import annotations`` makes it: evaluated (in this
    # module) at the first carrier, making a codec each time it is evaluated.
    annotations = {"n": "Annotated[int, Counted()]"}
    cls = type(
        "Racing", (make,), {"__annotations__": annotations, "__module__": __name__}
    )
    racing = xlocal.new(cls, "free.racing", portable=True)
    before = Counted.made

    def work(i: int) -> None:
        with racing(n=i):
            carrier = inject()
        with extract(carrier):
            assert racing.n == i

    together(work)
    assert Counted.made == before + 1


def test_local_stack_pushed_by_every_thread_at_once() -> None:
    """A LocalStack shared by many threads gives each its own stack."""
    stack: LocalStack[int] = LocalStack()

    def work(i: int) -> None:
        for n in range(ROUNDS):
            stack.push(i)
            stack.push(n)
            assert (stack.pop(), stack.top) == (n, i)
            assert stack.pop() == i
            assert stack.top is None

    together(work)
