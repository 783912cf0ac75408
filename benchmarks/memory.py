"""Memory figures, traced with tracemalloc: what a live binding costs, and what is left.

Every figure is a difference of ``tracemalloc.get_traced_memory()`` taken after
``gc.collect()``, around work that has been warmed up first, so that one-off caches
(an interned name, gevent's hub, a free list) are not counted as growth.
tracemalloc is CPython's: elsewhere (PyPy) the memory figures are reported as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from xlocal import xlocal

from .peers import Unavailable, optional, xlocal05

try:
    import tracemalloc
except ImportError:  # PyPy has the module but not the _tracemalloc it needs
    HAS_TRACEMALLOC = False
else:
    HAS_TRACEMALLOC = True

__all__ = ["Memory", "measure"]

#: Why there are no memory figures, where tracemalloc is missing.
NO_TRACEMALLOC = "tracemalloc is not available on this interpreter"


@dataclass
class Memory:
    """The memory figures of one run; bytes, except where counted."""

    frames: int
    #: Bytes per live binding frame, by peer, with *frames* bindings nested.
    frame_bytes: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    cycles: int = 0
    cycle_growth: int = 0
    spawned: int = 0
    #: By "gevent greenlets" and "asyncio tasks": bytes left and bound values alive.
    retained_bytes: dict[str, int] = field(default_factory=dict)
    live_values: dict[str, int] = field(default_factory=dict)
    #: Why nothing was measured ("" when the figures are there).
    unavailable: str = ""


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@contextlib.contextmanager
def _tracing() -> Iterator[None]:
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


def _frame_bytes(make: Callable[[], Any], frames: int) -> float:
    """Bytes per binding frame of *make*'s xlocal, with *frames* of them live."""
    o = make()
    value = object()
    with o(a=value):
        pass
    entered: list[Any] = []
    before = _traced()
    for _ in range(frames):
        binding = o(a=value)
        binding.__enter__()
        entered.append(binding)
    # Counted with the binding objects, and 8 bytes a frame of the list itself.
    after = _traced()
    for binding in reversed(entered):
        binding.__exit__(None, None, None)
    return (after - before) / frames


def _contextvar_frame_bytes(frames: int) -> float:
    """Bytes per ``set`` of a raw ContextVar kept live, with its Token."""
    var: contextvars.ContextVar[object] = contextvars.ContextVar("var")
    value = object()
    var.reset(var.set(value))
    tokens = []
    before = _traced()
    for _ in range(frames):
        tokens.append(var.set(value))
    after = _traced()
    for token in reversed(tokens):
        var.reset(token)
    return (after - before) / frames


def _cycle_growth(cycles: int) -> int:
    """Bytes left after *cycles* bind/unbind cycles of one name."""
    x = xlocal("x")
    value = object()
    for _ in range(1000):
        with x(a=value):
            pass
    before = _traced()
    for _ in range(cycles):
        with x(a=value):
            pass
    return _traced() - before


class _Value:
    """A bound value that counts its live instances."""

    live = 0

    def __init__(self) -> None:
        _Value.live += 1

    def __del__(self) -> None:
        _Value.live -= 1


def _bind_and_read(x: Any) -> None:
    with x(a=_Value()):
        assert isinstance(x.a, _Value)


def _after_greenlets(n: int) -> tuple[int, int]:
    """Bytes and bound values left by *n* greenlets, after as many to warm up."""
    gevent = optional("gevent")
    x = xlocal("x")

    def run(count: int) -> None:
        gevent.joinall([gevent.spawn(_bind_and_read, x) for _ in range(count)])

    run(n)
    before, live = _traced(), _Value.live
    run(n)
    return _traced() - before, _Value.live - live


def _after_tasks(n: int) -> tuple[int, int]:
    """Bytes and bound values left by *n* tasks, after as many to warm up."""
    x = xlocal("x")

    async def one() -> None:
        _bind_and_read(x)

    async def main(count: int) -> None:
        await asyncio.gather(*[one() for _ in range(count)])

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main(n))
        before, live = _traced(), _Value.live
        loop.run_until_complete(main(n))
        return _traced() - before, _Value.live - live
    finally:
        loop.close()


def measure(frames: int = 1000, cycles: int = 1_000_000, spawn: int = 10_000) -> Memory:
    """All memory figures; the smaller arguments make the smoke run."""
    memory = Memory(frames=frames, cycles=cycles, spawned=spawn)
    makers: dict[str, Callable[[], Any]] = {
        "xlocal 0.5": lambda: xlocal05().xlocal(),
        "xlocal": lambda: xlocal("x"),
    }
    runs = {"gevent greenlets": _after_greenlets, "asyncio tasks": _after_tasks}
    if not HAS_TRACEMALLOC:
        memory.unavailable = NO_TRACEMALLOC
        memory.skipped = dict.fromkeys(["contextvars", *makers, *runs], NO_TRACEMALLOC)
        return memory
    with _tracing():
        memory.frame_bytes["contextvars"] = _contextvar_frame_bytes(frames)
        for peer, make in makers.items():
            try:
                memory.frame_bytes[peer] = _frame_bytes(make, frames)
            except Unavailable as exc:
                memory.skipped[peer] = str(exc)
        memory.cycle_growth = _cycle_growth(cycles)
        for kind, run in runs.items():
            try:
                memory.retained_bytes[kind], memory.live_values[kind] = run(spawn)
            except Unavailable as exc:
                memory.skipped[kind] = str(exc)
    return memory
