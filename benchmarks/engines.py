"""Per-task cost of carrying bindings on real engines, as a ratio of the engine's own.

``python -m benchmarks.engines [--fast | --smoke]`` starts the engines itself, on
127.0.0.1, and times tasks that return at once, while three small portable values
are bound:

- Celery: a round trip, ``delay(i).get()``, through a real redis-server and one solo
  worker process: a plain app against an app with ``xlocal.celery.install``.  The
  worker (installed) serves both, so that the cases differ only in the carrier; a
  message without one costs the worker a few microseconds.
- Dask: ``submit(f, i).result()`` on a ``LocalCluster`` with one worker process:
  ``distributed.Client`` against ``xlocal.dask.Client`` (both connected to it).

The two cases of an engine are interleaved, so that both see the same machine load:
each round times *tasks* sequential tasks of each case, alternating task by task.  The
report gives the median seconds per task of each case, the median of the per-round
ratios with its interquartile range, and the verdict against the targets of issue 14
(under 5% for Celery, under 10% for Dask).  The test suite runs ``--smoke``, which
checks that everything runs and asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlocal import xlocal

__all__ = [
    "MODES",
    "Figures",
    "celery_figures",
    "dask_figures",
    "format_figures",
    "noop",
]

ROOT = Path(__file__).resolve().parent.parent

#: (tasks per round, rounds) for each size of run.
MODES = {"full": (100, 20), "fast": (40, 5), "smoke": (2, 2)}

#: The targets of issue 14: carrying costs less than this fraction of a task.
TARGETS = {"celery": 0.05, "dask": 0.10}

request = xlocal("benchmarks.dask.request", portable=True)

BOUND = {"user_id": 7, "tenant": "acme", "trace": "4bf92f3577b34da6"}


def noop(i: int) -> int:
    """The Dask task: the engine's own cost, and nothing else."""
    return i


@dataclass
class Figures:
    """Seconds per task of each round, for the plain and the carrying case."""

    engine: str
    plain: list[float]
    carrying: list[float]
    #: Seconds per task of carrying's own steps alone, timed in-process.
    own: float = 0.0

    @property
    def ratios(self) -> list[float]:
        return [c / p for p, c in zip(self.plain, self.carrying)]

    def overhead(self) -> tuple[float, float, float]:
        """Carrying's extra cost per task, as a fraction: median and quartiles."""
        ratios = self.ratios
        if len(ratios) == 1:
            return (ratios[0] - 1,) * 3
        q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        return q2 - 1, q1 - 1, q3 - 1


def _interleaved(
    plain: Callable[[int], object],
    carrying: Callable[[int], object],
    tasks: int,
    rounds: int,
) -> tuple[list[float], list[float]]:
    """The median seconds per task of each case, round by round.

    The cases alternate task by task (and which goes first, from task to task), so
    that load on the machine falls on both alike.
    """
    plain_medians: list[float] = []
    carrying_medians: list[float] = []
    for round_ in range(rounds):
        times: tuple[list[float], list[float]] = ([], [])
        for i in range(tasks):
            first = (round_ + i) % 2
            for which in (first, 1 - first):
                case = carrying if which else plain
                start = time.perf_counter()
                case(i)
                times[which].append(time.perf_counter() - start)
        plain_medians.append(statistics.median(times[0]))
        carrying_medians.append(statistics.median(times[1]))
    return plain_medians, carrying_medians


def _best_of(stmt: Callable[[], object], number: int = 2000) -> float:
    """Seconds per call of *stmt*: the best of 5 timings of *number* calls."""
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number


def celery_own_work() -> float:
    """Seconds per task that carrying adds: inject in the publisher; hide, extract,
    enter and exit in the worker."""
    from xlocal._engines import hidden  # noqa: PLC0415
    from xlocal.portable import extract, inject  # noqa: PLC0415

    def publish() -> object:
        return inject({})

    with request(**BOUND):
        carrier = inject()

    def run() -> None:
        with hidden(), extract(carrier):
            pass

    with request(**BOUND):
        return _best_of(publish) + _best_of(run)


def dask_own_work() -> float:
    """Seconds per task that carrying adds to submit (wrap, a longer token) and to
    the call on the worker."""
    from dask.base import tokenize  # noqa: PLC0415

    from xlocal.dask import carried  # noqa: PLC0415

    def plain() -> object:
        tokenize(noop, {}, 1)
        return noop(1)

    def carrying() -> object:
        job = carried(noop)
        tokenize(job, {}, 1)
        return job(1)

    with request(**BOUND):
        return max(_best_of(carrying, 500) - _best_of(plain, 500), 0.0)


def _test_engines() -> Any:
    """tests/engines.py, which starts and stops the real engines for the tests too."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    return importlib.import_module("engines")


def celery_figures(tasks: int, rounds: int) -> Figures:
    """Celery round trips, plain and carrying, against a real redis and workers."""
    engines = _test_engines()
    with engines.Redis().running() as redis:
        apps = importlib.import_module("benchmarks._celery_app")
        bound = apps.request
        with contextlib.ExitStack() as stack:
            for app in (apps.plain, apps.carrying):
                app.conf.update(broker_url=redis.url, result_backend=redis.url)
                stack.callback(engines.close_app, app)
            worker = engines.CeleryWorker(
                redis.url,
                "solo",
                app="benchmarks._celery_app:carrying",
                cwd=ROOT,
                queue="plain,carrying",
            )
            stack.callback(worker.stop)
            worker.start()
            worker.wait_ready(apps.carrying)
            plain_task = apps.plain.tasks["bench.noop"]
            carrying_task = apps.carrying.tasks["bench.noop"]

            def plain(i: int) -> object:
                with bound(**BOUND):
                    return plain_task.delay(i).get(timeout=60)

            def carrying(i: int) -> object:
                with bound(**BOUND):
                    return carrying_task.delay(i).get(timeout=60)

            for case in (plain, carrying):  # warm up: connections, imports
                case(0)
            times = _interleaved(plain, carrying, tasks, rounds)
    return Figures("celery", *times, own=celery_own_work())


def dask_figures(tasks: int, rounds: int) -> Figures:
    """Dask submit + result, plain and carrying, on a real one-worker cluster."""
    import distributed  # noqa: PLC0415 - only this benchmark needs it

    import xlocal.dask  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(
            distributed.LocalCluster(
                n_workers=1,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
            )
        )
        plain_client = stack.enter_context(
            distributed.Client(cluster, set_as_default=False)
        )
        carrying_client = stack.enter_context(
            xlocal.dask.Client(cluster, set_as_default=False)
        )

        # Other arguments in each case, so that no call reuses another's result.
        def plain(i: int) -> object:
            with request(**BOUND):
                return plain_client.submit(noop, -i - 1).result(timeout=60)

        def carrying(i: int) -> object:
            with request(**BOUND):
                return carrying_client.submit(noop, i + 1).result(timeout=60)

        for case in (plain, carrying):
            case(0)
        times = _interleaved(plain, carrying, tasks, rounds)
    # Timed once the cluster is gone, on a quieter machine.
    return Figures("dask", *times, own=dask_own_work())


def format_figures(figures: list[Figures]) -> str:
    """The report: times per task, carrying's overhead, and the verdicts.

    The verdict is on the median overhead, "(close)" when its interquartile range
    straddles the target.  "own work" is carrying's steps timed alone, in-process,
    and their share of a plain task: the part of the overhead that is not noise.
    """
    lines = [
        f"{'engine':<8}{'plain task':>12}{'carrying':>12}  {'overhead (IQR)':<26}"
        f"{'own work':>18}  target  verdict"
    ]
    for f in figures:
        median, q1, q3 = f.overhead()
        target = TARGETS[f.engine]
        plain = statistics.median(f.plain)
        verdict = "pass" if median < target else "MISS"
        if q1 < target <= q3:
            verdict += " (close)"
        overhead = f"{median:+.1%} ({q1:+.1%} to {q3:+.1%})"
        own = f"{f.own * 1e6:.0f} µs = {f.own / plain:.1%}"
        lines.append(
            f"{f.engine:<8}{plain * 1e6:>9.0f} µs"
            f"{statistics.median(f.carrying) * 1e6:>9.0f} µs  {overhead:<26}"
            f"{own:>18}  <{target:.0%}    {verdict}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engines",
        description="Per-task cost of carrying bindings on Celery and Dask.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--fast", action="store_true", help="a rough run")
    size.add_argument("--smoke", action="store_true", help="check that it all runs")
    parser.add_argument(
        "--engine", choices=["celery", "dask"], action="append", help="only these"
    )
    args = parser.parse_args(argv)
    tasks, rounds = MODES["fast" if args.fast else "smoke" if args.smoke else "full"]
    measure = {"celery": celery_figures, "dask": dask_figures}
    figures = [measure[e](tasks, rounds) for e in args.engine or ["celery", "dask"]]
    sys.stdout.write(format_figures(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
