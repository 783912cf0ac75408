"""Isolation: threads, greenlets, gevent, eventlet and asyncio tasks never mix bindings.

Each scenario is written once, as a generator of one unit of work that yields wherever
control should pass to the other units, and runs under every execution model: the
``model`` fixture starts the units concurrently and resumes each at its own pauses, in
its own thread, greenlet or task.  A deliberately broken local shared by the whole
process runs through the same scenarios and must fail, which shows that the scenarios
catch a leak.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import collected
from executions import MODELS, SPAWNING, TIMEOUT, Model, Scenario

from xlocal import xlocal

greenlet = pytest.importorskip("greenlet")
gevent = pytest.importorskip("gevent")
eventlet = pytest.importorskip("eventlet")


@pytest.fixture(params=MODELS, ids=lambda m: m.name)
def model(request: pytest.FixtureRequest) -> Model:
    """Each execution model in turn."""
    return request.param  # type: ignore[no-any-return]


# -- a broken local, to show the scenarios catch leaks ---------------------------------


class SharedLocal:
    """The xlocal API on one process-wide stack: what isolation must not look like."""

    def __init__(self) -> None:
        self.__dict__["_stack"] = [{}]

    def __call__(self, **names: Any) -> Any:
        stack = self._stack

        class Shared:
            def __enter__(self) -> None:
                self.frame = {**stack[-1], **names}
                stack.append(self.frame)

            def __exit__(self, *exc: object) -> None:
                stack.remove(self.frame)

        return Shared()

    def __getattr__(self, name: str) -> Any:
        try:
            return self._stack[-1][name]
        except KeyError:
            raise AttributeError(name) from None


# -- scenarios -------------------------------------------------------------------------


def own_values(x: Any, i: int) -> Iterator[None]:
    """Bind this unit's id, nest a second binding, and read both across pauses."""
    assert not hasattr(x, "id")
    yield
    with x(id=i, kind="outer"):
        yield
        assert (x.id, x.kind) == (i, "outer")
        with x(kind="inner", depth=i * 2):
            yield
            assert (x.id, x.kind, x.depth) == (i, "inner", i * 2)
            yield
            assert x.id == i
        yield
        assert (x.id, x.kind) == (i, "outer")
        assert not hasattr(x, "depth")
    yield
    assert not hasattr(x, "id")


def only_some_bind(x: Any, i: int) -> Iterator[None]:
    """Half the units bind; the other half must never see a binding."""
    if i % 2:
        with x(id=i):
            yield
            assert x.id == i
            yield
    else:
        yield
        assert not hasattr(x, "id")
        yield
        assert not hasattr(x, "id")


SCENARIOS = [own_values, only_some_bind]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_units_see_only_their_own_bindings(
    model: Model, scenario: Scenario, xcurrent: xlocal
) -> None:
    """Concurrent units, interleaved inside their with-blocks, see only their values."""
    model.run(scenario, xcurrent)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenarios_catch_a_shared_local(model: Model, scenario: Scenario) -> None:
    """The same scenarios fail on a local that all units share."""
    with pytest.raises((AssertionError, greenlet.GreenletExit)):
        model.run(scenario, SharedLocal(), n=10)


def shadow_id(x: Any, i: int) -> Iterator[None]:
    """Shadow whatever id the unit started with, then check it is back."""
    before = getattr(x, "id", None)
    with x(id=i):
        yield
        assert x.id == i
    yield
    assert getattr(x, "id", None) == before


def test_outer_bindings_stay_in_the_runner(model: Model, xcurrent: xlocal) -> None:
    """Units run while the test itself has bindings never change them."""
    with xcurrent(id="runner"):
        model.run(shadow_id, xcurrent, n=20)
        assert xcurrent.id == "runner"


# -- new units start empty (asyncio tasks inherit: see below) --------------------------


@pytest.mark.parametrize("model", SPAWNING, ids=lambda m: m.name)
def test_new_unit_sees_nothing(model: Model, xcurrent: xlocal) -> None:
    """A new thread or greenlet starts with none of its creator's bindings; a thread
    where threads inherit their creator's context (Python 3.14's -X
    thread_inherit_context=1) starts with a copy of them, as an asyncio task does."""
    with xcurrent(request="creator's"):
        seen = model.spawn_and_get(lambda: dir(xcurrent))
        assert xcurrent.request == "creator's"
    inherits = model.name == "thread" and getattr(
        sys.flags, "thread_inherit_context", 0
    )
    assert seen == (["request"] if inherits else [])


@pytest.mark.parametrize("model", SPAWNING, ids=lambda m: m.name)
def test_new_unit_bindings_stay_there(model: Model, xcurrent: xlocal) -> None:
    """What a new thread or greenlet binds is never seen by its creator."""

    def unit() -> Any:
        with xcurrent(request="unit's"):
            return xcurrent.request

    with xcurrent(request="creator's"):
        assert model.spawn_and_get(unit) == "unit's"
        assert xcurrent.request == "creator's"


def test_task_inherits_creator_bindings(xcurrent: xlocal) -> None:
    """A task sees its creator's bindings, even after the creator's block exits."""

    async def child(started: asyncio.Event, go: asyncio.Event) -> Any:
        started.set()
        await asyncio.wait_for(go.wait(), TIMEOUT)
        return xcurrent.request

    async def main() -> None:
        started, go = asyncio.Event(), asyncio.Event()
        with xcurrent(request="creator's"):
            task = asyncio.create_task(child(started, go))
            await asyncio.wait_for(started.wait(), TIMEOUT)
        assert not hasattr(xcurrent, "request")
        go.set()
        assert await task == "creator's"

    asyncio.run(main())


def test_task_bindings_never_reach_creator(xcurrent: xlocal) -> None:
    """What a task binds, shadowing its creator's names or not, stays in the task."""

    async def child(inside: asyncio.Event, leave: asyncio.Event) -> None:
        with xcurrent(request="task's", extra=1):
            inside.set()
            await asyncio.wait_for(leave.wait(), TIMEOUT)

    async def main() -> None:
        inside, leave = asyncio.Event(), asyncio.Event()
        with xcurrent(request="creator's"):
            task = asyncio.create_task(child(inside, leave))
            await asyncio.wait_for(inside.wait(), TIMEOUT)
            assert xcurrent.request == "creator's"
            assert not hasattr(xcurrent, "extra")
            leave.set()
            await task
            assert dir(xcurrent) == ["request"]

    asyncio.run(main())


# -- no leftovers in units that end, fail or are killed --------------------------------


class Value:
    """A bindable object that weak references can watch."""


def test_thread_that_raised_inside_a_block_keeps_nothing(
    xcurrent: xlocal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread dying of an exception inside a with-block leaves nothing behind."""
    died: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    refs: list[weakref.ref[Value]] = []

    def unit() -> None:
        value = Value()
        refs.append(weakref.ref(value))
        with xcurrent(v=value):
            raise RuntimeError("dies")

    t = threading.Thread(target=unit)
    t.start()
    t.join(TIMEOUT)
    assert [d.exc_type for d in died] == [RuntimeError]
    died.clear()
    assert collected(refs[0])


def start_suspended_greenlet(xcurrent: xlocal) -> tuple[Any, weakref.ref[Value]]:
    """A raw greenlet suspended inside a with-block, and a ref to its bound value."""
    value = Value()
    ref = weakref.ref(value)

    def unit(v: Value) -> None:
        with xcurrent(v=v):
            greenlet.getcurrent().parent.switch()

    g = greenlet.greenlet(unit)
    g.switch(value)
    return g, ref


def test_greenlet_thrown_into_inside_a_block_keeps_nothing(xcurrent: xlocal) -> None:
    """greenlet.throw into a greenlet suspended in a with-block unwinds it cleanly."""
    with xcurrent(mine="runner"):
        g, ref = start_suspended_greenlet(xcurrent)
        with pytest.raises(KeyError):
            g.throw(KeyError("boom"))
        assert xcurrent.mine == "runner"
    assert g.dead
    del g
    assert collected(ref)


@pytest.mark.cpython_only(
    "the greenlet C extension kills a dropped suspended greenlet; PyPy's greenlet "
    "has no finalizer, so the greenlet's with-block never exits"
)
def test_greenlet_dropped_inside_a_block_keeps_nothing(xcurrent: xlocal) -> None:
    """A suspended greenlet that is garbage-collected leaves nothing behind."""
    with xcurrent(mine="runner"):
        g, ref = start_suspended_greenlet(xcurrent)
        del g
        assert collected(ref)
        assert xcurrent.mine == "runner"


def test_gevent_killed_inside_a_block_keeps_nothing(xcurrent: xlocal) -> None:
    """gevent.kill of a greenlet waiting inside a with-block leaves nothing behind."""
    refs: list[weakref.ref[Value]] = []
    inside = gevent.event.Event()

    def unit() -> None:
        value = Value()
        refs.append(weakref.ref(value))
        with xcurrent(v=value):
            del value
            inside.set()
            gevent.event.Event().wait()

    with xcurrent(mine="runner"):
        job = gevent.spawn(unit)
        assert inside.wait(TIMEOUT)
        job.kill(timeout=TIMEOUT)
        assert job.dead
        assert xcurrent.mine == "runner"
    del job
    assert collected(refs[0])


def test_task_cancelled_inside_a_block_keeps_nothing(xcurrent: xlocal) -> None:
    """A task cancelled inside a with-block leaves nothing behind."""
    refs: list[weakref.ref[Value]] = []

    async def unit(inside: asyncio.Event) -> None:
        value = Value()
        refs.append(weakref.ref(value))
        with xcurrent(v=value):
            del value
            inside.set()
            await asyncio.Event().wait()

    async def main() -> None:
        inside = asyncio.Event()
        with xcurrent(mine="runner"):
            task = asyncio.create_task(unit(inside))
            await asyncio.wait_for(inside.wait(), TIMEOUT)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert xcurrent.mine == "runner"

    asyncio.run(main())
    assert collected(refs[0])


def test_many_units_keep_nothing(model: Model, xcurrent: xlocal) -> None:
    """After many units bind values and finish, none of those values is alive."""
    refs: list[weakref.ref[Value]] = []

    def unit(x: Any, i: int) -> Iterator[None]:
        value = Value()
        refs.append(weakref.ref(value))
        with x(v=value):
            del value
            yield
            with x(w=x.v):
                yield

    model.run(unit, xcurrent, n=200)
    assert len(refs) == 200
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []
