"""Timing the cases: with pyperf in worker processes, or in-process for the smoke run.

``python -m benchmarks.timing [pyperf options] [--spawn N]`` is the pyperf script that
``python -m benchmarks`` runs; pyperf starts one worker process per run, each of which
times one case after a warm-up.  Cases whose peer is not installed are left out here and
reported as skipped by the caller.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import timeit
from typing import Any

from .cases import CASES, Case
from .peers import Unavailable

__all__ = ["SPAWN", "inner_loops", "main", "skip_reason", "smoke_values"]

#: How many greenlets or tasks one spawn statement starts.
SPAWN = 10_000


def skip_reason(case: Case, n: int) -> str | None:
    """Why *case* cannot run here, or None when it can."""
    try:
        with case.setup(n):
            return None
    except Unavailable as exc:
        return str(exc)


def inner_loops(case: Case, n: int) -> int:
    """How many operations one loop of *case*'s timer does."""
    return case.unroll * (n if case.batch else 1)


def _timer(case: Case, ns: dict[str, Any]) -> timeit.Timer:
    # The names become locals of timeit's inner function, as in a real hot loop.
    setup = "\n".join(f"{name} = _ns[{name!r}]" for name in ns)
    body = "\n".join([case.stmt] * case.unroll)
    return timeit.Timer(body, setup, globals={"_ns": ns})


_prepared: dict[str, timeit.Timer] = {}
_keep = contextlib.ExitStack()


def _time(loops: int, case: Case, n: int) -> float:
    """pyperf's time function: seconds taken by *loops* loops of *case*."""
    timer = _prepared.get(case.name)
    if timer is None:
        # Set up once per worker process, and left in place until it exits.
        timer = _prepared[case.name] = _timer(case, _keep.enter_context(case.setup(n)))
    return timer.timeit(loops)


def smoke_values(case: Case, n: int, loops: int = 1, repeat: int = 3) -> list[float]:
    """Seconds per operation of *case*, timed in-process and undone afterwards."""

    def run() -> list[float]:
        with case.setup(n) as ns:
            timer = _timer(case, ns)
            per_op = loops * inner_loops(case, n)
            return [t / per_op for t in timer.repeat(repeat, loops)]

    # A context of its own, so that nothing the setup binds outlives the run.
    result: list[float] = contextvars.copy_context().run(run)
    return result


def _forward(cmd: list[str], args: argparse.Namespace) -> None:
    """Pass the options of this script on to pyperf's worker processes."""
    cmd.extend((f"--spawn={args.spawn}", f"--cases={args.cases}"))


def main() -> None:
    """Run the pyperf script: the available cases, or those listed by ``--cases``."""
    import pyperf  # noqa: PLC0415 - only the timed run needs it

    runner = pyperf.Runner(
        program_args=("-m", "benchmarks.timing"), add_cmdline_args=_forward
    )
    runner.argparser.add_argument("--spawn", type=int, default=SPAWN)
    runner.argparser.add_argument(
        "--cases", default="", help="comma-separated indices into CASES (default: all)"
    )
    args = runner.parse_args()
    if not args.cases:
        # Checked once here, not in every worker: the checks import every peer.
        ready = [i for i, c in enumerate(CASES) if skip_reason(c, args.spawn) is None]
        args.cases = ",".join(map(str, ready))
    for index in map(int, args.cases.split(",")):
        case = CASES[index]
        runner.bench_time_func(
            case.name,
            _time,
            case,
            args.spawn,
            inner_loops=inner_loops(case, args.spawn),
        )


if __name__ == "__main__":
    main()
