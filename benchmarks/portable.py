"""What carrying portable bindings adds to a process-pool task, against the pool's own.

Three ways to run a trivial task, each ``tasks`` times in a row, measured in rounds in
this one process: each round runs every way once, in an order that rotates, so that the
machine's load falls on all of them alike.

- ``process pool task``: ``ProcessPoolExecutor.submit(task).result()``, the pool's own
  cost of one task, there and back;
- ``ContextExecutor task``: the same through ``xlocal.ContextExecutor`` with three
  small portable values bound, all the carrying included (encode, pickle, decode, bind
  in the worker);
- ``inject + extract``: ``with extract(inject()): pass`` in this process, with the same
  three values bound: the carrier alone, made and read.

The figure of interest is the carrier's cost as a fraction of the pool's per-task cost.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from xlocal import ContextExecutor, xlocal
from xlocal.portable import extract, inject

__all__ = ["CARRIED", "INJECT", "POOL", "Portable", "measure_portable"]

POOL = "process pool task"
CARRIED = "ContextExecutor task"
INJECT = "inject + extract"

#: The portable xlocal the measurement binds; a spawned worker imports it from here.
request = xlocal("benchmarks.portable.request", portable={"user_id", "tenant", "role"})


@dataclass
class Portable:
    """Seconds per task of each way, one value per round."""

    rounds: int
    tasks: int
    seconds: dict[str, list[float]] = field(default_factory=dict)


def task() -> int:
    """The trivial task that the pool runs."""
    return 1


def _inject_extract() -> None:
    with extract(inject()):
        pass


def measure_portable(rounds: int, tasks: int) -> Portable:
    """Time the three ways, interleaved: *rounds* rounds of *tasks* tasks each."""
    result = Portable(rounds, tasks, {POOL: [], CARRIED: [], INJECT: []})
    # spawn, as the default start method of most platforms; fork where the interpreter's
    # ProcessPoolExecutor cannot start spawned workers (PyPy 3.9's renamed a method).
    spawns = hasattr(ProcessPoolExecutor, "_adjust_process_count")
    method = "spawn" if spawns else "fork"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        carried = ContextExecutor(pool)
        ways: dict[str, Callable[[], object]] = {
            POOL: lambda: pool.submit(task).result(),
            CARRIED: lambda: carried.submit(task).result(),
            INJECT: _inject_extract,
        }
        names = list(ways)
        with request(user_id=7, tenant="acme", role="admin"):
            for way in ways.values():  # start the worker, warm every path up
                for _ in range(min(tasks, 20)):
                    way()
            for turn in range(rounds):
                for name in names[turn % 3 :] + names[: turn % 3]:
                    way = ways[name]
                    start = time.perf_counter()
                    for _ in range(tasks):
                        way()
                    result.seconds[name].append((time.perf_counter() - start) / tasks)
    return result
