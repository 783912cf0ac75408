"""A quick interleaved comparison of the two cores: ``python -m benchmarks.cores [N]``.

The compiled core (the one in use) and the pure core (loaded beside it) are timed in
one process with timeit, every case once per round for *N* rounds (15 by default), so
that machine noise hits all of them alike.  Each ratio is given two ways: the median
of the per-round ratios (with the lowest and highest), and the ratio of the cases'
best times, which a busy machine disturbs least (noise only ever adds time); the
verdict is on the latter.  Much faster than the full pyperf run, and rougher; the
targets are those of issue 12.
"""

from __future__ import annotations

import contextlib
import contextvars
import statistics
import sys
import threading
import timeit
from typing import Any

import xlocal

from .peers import pure_core

__all__ = ["TARGETS", "main", "measure"]

V = object()

#: The statements timed, by case.
STATEMENTS = {
    "read": "C.a",
    "read pure": "P.a",
    "read threading.local": "tl.a",
    "miss": "hasattr(C, 'b')",
    "miss pure": "hasattr(P, 'b')",
    "bind": "with C(a=v): pass",
    "bind pure": "with P(a=v): pass",
    "ContextVar set+reset": "var.reset(var.set(v))",
    "bind 5": "with C(a=v, b=v, c=v, d=v, e=v): pass",
    "depth 1": "d1.n0",
    "depth 100": "d100.n0",
}

#: (what, case, peer case, at most).
TARGETS = (
    ("read / threading.local", "read", "read threading.local", 0.5),
    ("miss / pure miss", "miss", "miss pure", 0.3),
    ("bind+unbind / ContextVar set+reset", "bind", "ContextVar set+reset", 4.0),
    ("5 names / 1 name", "bind 5", "bind", 1.35),
    ("depth 100 / depth 1", "depth 100", "depth 1", 1.1),
    ("pure read / threading.local", "read pure", "read threading.local", 2.2),
    (
        "pure bind+unbind / ContextVar set+reset",
        "bind pure",
        "ContextVar set+reset",
        7.5,
    ),
)

_UNROLL = 20
_LOOPS = 2000


def _nested(stack: contextlib.ExitStack, x: Any, depth: int) -> Any:
    for i in range(depth):
        stack.enter_context(x(**{f"n{i}": V}))
    return x


def measure(rounds: int) -> dict[str, list[float]]:
    """Seconds per operation of each case, one figure per round."""
    with contextlib.ExitStack() as stack:
        c: Any = xlocal.xlocal("o")
        p: Any = pure_core().xlocal("o")
        stack.enter_context(c(a=V))
        stack.enter_context(p(a=V))
        local = threading.local()
        local.a = V
        ns = {
            "C": c,
            "P": p,
            "tl": local,
            "var": contextvars.ContextVar("var"),
            "v": V,
            "d1": _nested(stack, xlocal.xlocal("d1"), 1),
            "d100": _nested(stack, xlocal.xlocal("d100"), 100),
        }
        setup = "\n".join(f"{name} = _ns[{name!r}]" for name in ns)
        timers = {
            case: timeit.Timer("\n".join([stmt] * _UNROLL), setup, globals={"_ns": ns})
            for case, stmt in STATEMENTS.items()
        }
        seconds: dict[str, list[float]] = {case: [] for case in STATEMENTS}
        for _ in range(rounds):
            for case, timer in timers.items():
                best = min(timer.repeat(3, _LOOPS))
                seconds[case].append(best / (_LOOPS * _UNROLL))
    return seconds


def main(argv: list[str]) -> None:
    """Print each case's median and each target's ratio."""
    rounds = int(argv[0]) if argv else 15
    seconds = measure(rounds)
    print(f"CPython {sys.version.split()[0]}, xlocal core {xlocal.IMPLEMENTATION}")
    print(f"  {'case':24s} {'median':>8s} {'best':>8s}")
    for case, values in seconds.items():
        median, best = statistics.median(values) * 1e9, min(values) * 1e9
        print(f"  {case:24s} {median:8.1f} {best:8.1f} ns")
    print(f"  {'target':40s} best / best  median of rounds (range)  limit")
    for what, top, bottom, limit in TARGETS:
        ratios = [a / b for a, b in zip(seconds[top], seconds[bottom])]
        best = min(seconds[top]) / min(seconds[bottom])
        verdict = "pass" if best <= limit else "MISS"
        print(
            f"  {what:40s} {best:5.2f}x {verdict}  {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f})  <= {limit}x"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
