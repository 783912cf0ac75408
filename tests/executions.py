"""Execution models for the tests: run units of a scenario concurrently, each in its
own thread, greenlet or asyncio task, resuming each at its own pauses.

A scenario is a generator function of ``(x, i)``: the local under test and the unit's
number; it yields wherever control should pass to the other units.

When a unit fails, the model stops the others, and every unit closes its scenario
itself, so that the with-blocks it is suspended in exit in its own execution and in
this test: on PyPy a dropped generator or greenlet is finalized only when the collector
runs, later, in whatever execution that is.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gevent
import greenlet
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet warns on import that it is deprecated
    eventlet = importlib.import_module("eventlet")

TIMEOUT = 60

#: A unit of work: given the local to test and the unit's number, it binds and reads,
#: yielding wherever the other units should get a turn.
Scenario = Callable[[Any, int], Iterator[None]]


# -- execution models ------------------------------------------------------------------


class Model:
    """Runs *n* units of a scenario concurrently, each in its own execution."""

    name: str
    units: int

    def run(self, scenario: Scenario, x: Any, n: int | None = None) -> None:
        raise NotImplementedError

    def spawn_and_get(self, func: Callable[[], Any]) -> Any:
        """Run *func* in a new unit of this kind and return its result."""
        raise NotImplementedError


class Threads(Model):
    name, units = "thread", 50

    def run(self, scenario: Scenario, x: Any, n: int | None = None) -> None:
        n = n or self.units
        barrier = threading.Barrier(n, timeout=TIMEOUT)
        errors: list[BaseException] = []

        def unit(i: int) -> None:
            try:
                with contextlib.closing(scenario(x, i)) as steps:
                    for _ in steps:
                        barrier.wait()
            except BaseException as e:
                errors.append(e)
                barrier.abort()

        threads = [threading.Thread(target=unit, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        raise_first(errors, ignore=threading.BrokenBarrierError)

    def spawn_and_get(self, func: Callable[[], Any]) -> Any:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(func).result(TIMEOUT)


class Greenlets(Model):
    """Raw greenlets switched round-robin by hand: no hub, no timing."""

    name, units = "greenlet", 1000

    def run(self, scenario: Scenario, x: Any, n: int | None = None) -> None:
        n = n or self.units
        main = greenlet.getcurrent()

        def unit(i: int) -> None:
            with contextlib.closing(scenario(x, i)) as steps:
                for _ in steps:
                    main.switch()

        units = [greenlet.greenlet(unit) for _ in range(n)]
        try:
            for _ in range(TIMEOUT * 100):
                live = [(i, g) for i, g in enumerate(units) if not g.dead]
                if not live:
                    return
                for i, g in live:
                    g.switch(i) if not g else g.switch()
            pytest.fail("greenlets did not finish")
        finally:
            for g in units:
                if g:  # started and suspended: unwind it (GreenletExit) in itself
                    g.throw()

    def spawn_and_get(self, func: Callable[[], Any]) -> Any:
        return greenlet.greenlet(func).switch()


class Gevent(Model):
    name, units = "gevent", 10_000

    def run(self, scenario: Scenario, x: Any, n: int | None = None) -> None:
        def unit(i: int) -> None:
            with contextlib.closing(scenario(x, i)) as steps:
                for _ in steps:
                    gevent.sleep(0)

        jobs = [gevent.spawn(unit, i) for i in range(n or self.units)]
        try:
            done = gevent.joinall(jobs, timeout=TIMEOUT, raise_error=True)
            assert len(done) == len(jobs)
        finally:
            gevent.killall(jobs, timeout=TIMEOUT)

    def spawn_and_get(self, func: Callable[[], Any]) -> Any:
        return gevent.spawn(func).get(timeout=TIMEOUT)


class Eventlet(Model):
    name, units = "eventlet", 1000

    def run(self, scenario: Scenario, x: Any, n: int | None = None) -> None:
        def unit(i: int) -> None:
            with contextlib.closing(scenario(x, i)) as steps:
                for _ in steps:
                    eventlet.sleep(0)

        jobs = [eventlet.spawn(unit, i) for i in range(n or self.units)]
        try:
            with eventlet.Timeout(TIMEOUT):
                for job in jobs:
                    job.wait()
        finally:
            for job in jobs:
                job.kill()

    def spawn_and_get(self, func: Callable[[], Any]) -> Any:
        with eventlet.Timeout(TIMEOUT):
            return eventlet.spawn(func).wait()


class Tasks(Model):
    name, units = "asyncio", 10_000

    def run(self, scenario: Scenario, x: Any, n: int | None = None) -> None:
        async def unit(i: int) -> None:
            with contextlib.closing(scenario(x, i)) as steps:
                for _ in steps:
                    await asyncio.sleep(0)

        async def main() -> None:
            units = (unit(i) for i in range(n or self.units))
            await asyncio.wait_for(asyncio.gather(*units), TIMEOUT)

        asyncio.run(main())


def raise_first(errors: list[BaseException], ignore: type[BaseException]) -> None:
    real = [e for e in errors if not isinstance(e, ignore)] or errors
    if real:
        raise real[0]


MODELS = [Threads(), Greenlets(), Gevent(), Eventlet(), Tasks()]
SPAWNING = [m for m in MODELS if not isinstance(m, Tasks)]
