"""Model-based tests: random programs checked against a model of what must be visible.

A hypothesis state machine drives several xlocal objects from several executions at
once: the test's own thread, and units it spawns (threads, raw greenlets, gevent
greenlets, asyncio tasks), each started with nothing or, through ``xlocal.wrap``, with
its spawner's bindings.  Units are driven by explicit hand-offs (queues with timeouts,
greenlet switches, ``run_until_complete``), so every program is deterministic, and all
units stay suspended inside whatever with-blocks they have entered while the others run.

The model is plain Python: per execution and per xlocal, a stack of entries (the
binding object, the names it binds, the execution that entered it, whether its exit
already happened).  What an execution must see is the merge of its stack; what an exit
must do (restore, unwind out of order, or refuse) follows from where the binding is in
the stack.  Every read, ``getattr`` default, ``hasattr``, ``dir`` and ``repr`` of every
xlocal in every live unit is checked against the model after every step, and after the
program all bound values must be garbage.

The number of examples comes from the hypothesis profile (``tests/conftest.py``):
``HYPOTHESIS_PROFILE=long`` runs many more.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import queue
import re
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import collect
from hypothesis import event, note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import xlocal as xl
from xlocal import Binding, xlocal

greenlet = pytest.importorskip("greenlet")
gevent = pytest.importorskip("gevent")
gevent_queue = pytest.importorskip("gevent.queue")

TIMEOUT = 60
NAMES = ("a", "b", "get", "run")
XLOCALS = 3
MAX_UNITS = 6
KINDS = ("thread", "greenlet", "gevent", "task")

#: Indexes that pick among what exists so far (taken modulo its length), so that
#: shrinking goes towards the first unit, xlocal or binding.
pick = st.integers(min_value=0, max_value=15)
names = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True)


class Value:
    """A bound value: unique, compared by identity, and watched by a weak reference."""

    __slots__ = ("__weakref__", "n")

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"v{self.n}"


MISSING = object()


# -- the model -------------------------------------------------------------------------


@dataclass(eq=False)
class Entry:
    """One entry of a binding: what it binds, and in which execution's context."""

    binding: Binding[Any]
    names: dict[str, Value]
    ctx: int
    used: bool = False


@dataclass
class Exec:
    """What one execution (one contextvars.Context) must see: a stack per xlocal."""

    ctx: int
    stacks: list[list[Entry]] = field(
        default_factory=lambda: [[] for _ in range(XLOCALS)]
    )
    #: Entries made here, in order, to exit the innermost one first.
    entered: list[tuple[int, Entry]] = field(default_factory=list)

    def copy(self, ctx: int) -> Exec:
        """The execution that starts with a copy of this one's bindings."""
        return Exec(ctx, [list(stack) for stack in self.stacks])

    def frame(self, i: int) -> dict[str, Value]:
        merged: dict[str, Value] = {}
        for entry in self.stacks[i]:
            merged.update(entry.names)
        return merged

    def innermost_own(self) -> tuple[int, Entry] | None:
        for i, entry in reversed(self.entered):
            if any(e is entry for e in self.stacks[i]):
                return i, entry
        return None


def predict_exit(model: Exec, i: int, binding: Binding[Any]) -> tuple[str, int]:
    """What exiting *binding* does in *model*: the outcome and the entry's position.

    The innermost entry of the binding is the one exited.  An entry made in this
    execution is exited, taking along any entries made after it (out of order); an
    entry inherited from another execution (an asyncio task's creator, a capture) is
    refused and nothing changes; a binding with no entry here is not active.
    """
    stack = model.stacks[i]
    for pos in range(len(stack) - 1, -1, -1):
        entry = stack[pos]
        if entry.binding is binding:
            if entry.used or entry.ctx != model.ctx:
                return "elsewhere", pos
            return ("ok" if pos == len(stack) - 1 else "out of order"), pos
    return "not active", -1


def apply_exit(model: Exec, i: int, outcome: str, pos: int) -> None:
    if outcome in ("ok", "out of order"):
        stack = model.stacks[i]
        stack[pos].used = True
        del stack[pos:]


def expected_error(outcome: str, binding: Binding[Any], inner: list[Entry]) -> str:
    """The documented message (as a regex) of an exit with this outcome."""
    b = re.escape(repr(binding))
    if outcome == "out of order":
        return (
            rf"^{b} exited out of order: {len(inner)} binding\(s\) entered after it "
            rf"were still active, innermost {re.escape(repr(inner[-1].binding))}\. "
        )
    if outcome == "elsewhere":
        return rf"^cannot exit {b} here: it was entered in another asyncio task"
    return rf"^cannot exit {b}: it is not active in this execution\. "


# -- what runs inside the executions ---------------------------------------------------


Observation = list[dict[str, Any]]


def observe(xs: list[xlocal]) -> Observation:
    """Everything the current execution can see of each xlocal."""
    seen = []
    for x in xs:
        reads: dict[str, Any] = {}
        for name in NAMES:
            try:
                reads[name] = getattr(x, name)
            except AttributeError as e:
                reads[name] = (MISSING, str(e))
        seen.append(
            {
                "reads": reads,
                "defaults": {name: getattr(x, name, MISSING) for name in NAMES},
                "has": {name: hasattr(x, name) for name in NAMES},
                "dir": dir(x),
                "repr": repr(x),
            }
        )
    return seen


def try_exit(binding: Binding[Any]) -> str | None:
    """Exit *binding* here; the RuntimeError's message, if it raised one."""
    try:
        binding.__exit__(None, None, None)
    except RuntimeError as e:
        return str(e)
    return None


# -- executions that the test drives step by step --------------------------------------


class Unit:
    """An execution that runs the functions it is given, one at a time, and otherwise
    stays suspended where it is (inside whatever it has entered)."""

    kind = "main"
    alive = True

    def __init__(self, model: Exec, label: str) -> None:
        self.model = model
        self.label = label

    def call(self, fn: Callable[[], Any]) -> Any:
        return fn()

    def stop(self) -> None:
        self.alive = False


def _outcome(fn: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, fn()
    except BaseException as e:  # handed to the driver, which re-raises it
        return False, e


def _unpack(reply: tuple[bool, Any]) -> Any:
    ok, value = reply
    if not ok:
        raise value
    return value


class ThreadUnit(Unit):
    kind = "thread"

    def __init__(self, model: Exec, label: str) -> None:
        super().__init__(model, label)
        self.inbox: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self.outbox: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def serve(self) -> None:
        while (fn := self.inbox.get(timeout=TIMEOUT)) is not None:
            self.outbox.put(_outcome(fn))

    def start(self, runner: Callable[[], Any]) -> None:
        # In an empty context: the unit is started here, not in its parent, and so
        # must not inherit this thread's context (-X thread_inherit_context).
        self.thread = threading.Thread(
            target=contextvars.Context().run, args=(runner,), daemon=True
        )
        self.thread.start()

    def call(self, fn: Callable[[], Any]) -> Any:
        self.inbox.put(fn)
        return _unpack(self.outbox.get(timeout=TIMEOUT))

    def stop(self) -> None:
        self.inbox.put(None)
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        super().stop()


class GreenletUnit(Unit):
    """A raw greenlet, switched to and from explicitly: no hub, no timing."""

    kind = "greenlet"

    def __init__(self, model: Exec, label: str) -> None:
        super().__init__(model, label)
        self.driver = greenlet.getcurrent()

    def serve(self) -> None:
        fn = self.driver.switch()
        while fn is not None:
            fn = self.driver.switch(_outcome(fn))

    def start(self, runner: Callable[[], Any]) -> None:
        self.g = greenlet.greenlet(runner)
        self.g.switch()

    def call(self, fn: Callable[[], Any]) -> Any:
        return _unpack(self.g.switch(fn))

    def stop(self) -> None:
        self.g.switch(None)
        assert self.g.dead
        super().stop()


class GeventUnit(Unit):
    kind = "gevent"

    def __init__(self, model: Exec, label: str) -> None:
        super().__init__(model, label)
        self.inbox: Any = gevent_queue.Queue()
        self.outbox: Any = gevent_queue.Queue()

    def serve(self) -> None:
        while (fn := self.inbox.get(timeout=TIMEOUT)) is not None:
            self.outbox.put(_outcome(fn))

    def start(self, runner: Callable[[], Any]) -> None:
        self.g = gevent.spawn(runner)

    def call(self, fn: Callable[[], Any]) -> Any:
        self.inbox.put(fn)
        return _unpack(self.outbox.get(timeout=TIMEOUT))

    def stop(self) -> None:
        self.inbox.put(None)
        self.g.join(TIMEOUT)
        assert self.g.dead
        # The hub holds the dead greenlet (and the context it died with) until it has
        # notified the greenlet's links: let it finish that.
        gevent.idle()
        super().stop()


class TaskUnit(Unit):
    """An asyncio task on the machine's loop, which runs only while the driver waits
    for a reply."""

    kind = "task"

    def __init__(self, model: Exec, label: str, loop: asyncio.AbstractEventLoop):
        super().__init__(model, label)
        self.loop = loop
        # Python 3.9's queues take the current event loop when made (later ones the
        # running loop, when first used).
        asyncio.set_event_loop(loop)
        try:
            self.inbox: asyncio.Queue[Callable[[], Any] | None] = asyncio.Queue()
            self.outbox: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        finally:
            asyncio.set_event_loop(None)

    async def serve(self) -> None:
        while (fn := await self.inbox.get()) is not None:
            self.outbox.put_nowait(_outcome(fn))

    def start_task(
        self, coro: Coroutine[Any, Any, None], ctx: contextvars.Context | None = None
    ) -> None:
        if ctx is None:
            self.task = self.loop.create_task(coro)
        else:  # the task copies the context it is made in (context= is 3.11+)
            self.task = ctx.run(self.loop.create_task, coro)

    def call(self, fn: Callable[[], Any]) -> Any:
        self.inbox.put_nowait(fn)
        return _unpack(
            self.loop.run_until_complete(asyncio.wait_for(self.outbox.get(), TIMEOUT))
        )

    def stop(self) -> None:
        self.inbox.put_nowait(None)
        self.loop.run_until_complete(asyncio.wait_for(self.task, TIMEOUT))
        super().stop()


# -- the state machine -----------------------------------------------------------------


@dataclass
class Capture:
    """A snapshot or a wrapped function, and the bindings it must run with."""

    how: str
    obj: Any
    model: Exec
    label: str


class XlocalMachine(RuleBasedStateMachine):
    """Random programs of binds, exits, reads, captures and spawns."""

    def __init__(self) -> None:
        super().__init__()
        self.xs = [xlocal(f"x{i}") for i in range(XLOCALS)]
        self.ctxs = itertools.count(1)
        self.values = itertools.count()
        self.refs: list[weakref.ref[Value]] = []
        self.loop = asyncio.new_event_loop()
        self.units: list[Unit] = [Unit(Exec(0), "main")]
        #: Every binding made, with its xlocal's index and the values it binds.
        self.bindings: list[tuple[int, Binding[Any], dict[str, Value]]] = []
        self.captures: list[Capture] = []
        self.steps = 0

    # -- helpers

    def live(self, k: int) -> Unit:
        units = [u for u in self.units if u.alive]
        return units[k % len(units)]

    def value(self) -> Value:
        v = Value(next(self.values))
        self.refs.append(weakref.ref(v))
        return v

    def check(self, seen: Observation, model: Exec, where: str) -> None:
        """Compare what an execution saw with what its model says it must see."""
        assert len(seen) == len(self.xs)
        for i, got in enumerate(seen):
            frame = model.frame(i)
            label = f"x{i}"
            for name in NAMES:
                read, default = got["reads"][name], got["defaults"][name]
                if name in frame:
                    assert read is frame[name], f"{where}: {label}.{name}"
                    assert default is frame[name], f"{where}: getattr {label}.{name}"
                    assert got["has"][name], f"{where}: hasattr {label}.{name}"
                else:
                    assert read == (
                        MISSING,
                        f"{name!r} is not bound on <xlocal {label!r}> in this "
                        f"execution: bind it with `with {label}({name}=...)`",
                    ), f"{where}: {label}.{name} must be unbound"
                    assert default is MISSING, f"{where}: getattr {label}.{name}"
                    assert not got["has"][name], f"{where}: hasattr {label}.{name}"
            assert got["dir"] == sorted(frame), f"{where}: dir({label})"
            names = ", ".join(sorted(frame))
            assert got["repr"] == (
                f"<xlocal {label!r} bound: {names}>"
                if frame
                else f"<xlocal {label!r} unbound>"
            ), f"{where}: repr({label})"

    def exit_in(self, unit: Unit, i: int, binding: Binding[Any]) -> None:
        """Exit *binding* in *unit*, checking the outcome against the model."""
        outcome, pos = predict_exit(unit.model, i, binding)
        inner = unit.model.stacks[i][pos + 1 :] if pos >= 0 else []
        used = (
            " (its exit happened already)"
            if outcome == "elsewhere" and unit.model.stacks[i][pos].used
            else ""
        )
        note(f"{unit.label}: exit {binding!r} -> {outcome}{used}")
        event(f"exit: {outcome}{used}")
        error = unit.call(lambda: try_exit(binding))
        if outcome == "ok":
            assert error is None, f"{unit.label}: exit raised {error}"
        else:
            assert error is not None, f"{unit.label}: exit ({outcome}) did not raise"
            assert re.match(expected_error(outcome, binding, inner), error), error
        apply_exit(unit.model, i, outcome, pos)

    # -- rules

    @rule(unit=pick, layers=st.lists(st.tuples(pick, names), min_size=1, max_size=3))
    def enter_new(self, unit: int, layers: list[tuple[int, list[str]]]) -> None:
        """Make bindings in a unit and enter them there, one inside the other."""
        u = self.live(unit)
        for i, bound in layers:
            values = {name: self.value() for name in bound}
            x = self.xs[i % XLOCALS]
            binding = u.call(lambda: x(**values))  # noqa: B023 - called at once
            self.bindings.append((i % XLOCALS, binding, values))
            self.enter(u, i % XLOCALS, binding, values)

    @rule(unit=pick, b=pick)
    def enter_again(self, unit: int, b: int) -> None:
        """Enter a binding made earlier, anywhere: again, nested inside itself, or in
        another unit."""
        u = self.live(unit)
        if not self.bindings:
            return
        i, binding, values = self.bindings[b % len(self.bindings)]
        self.enter(u, i, binding, values)

    def enter(
        self, u: Unit, i: int, binding: Binding[Any], values: dict[str, Value]
    ) -> None:
        note(f"{u.label}: enter {binding!r} {values}")
        assert u.call(binding.__enter__) is self.xs[i]
        entry = Entry(binding, dict(values), u.model.ctx)
        u.model.stacks[i].append(entry)
        u.model.entered.append((i, entry))

    @rule(unit=pick)
    def exit_innermost(self, unit: int) -> None:
        """Exit the innermost binding a unit has entered (the with-statement order)."""
        u = self.live(unit)
        innermost = u.model.innermost_own()
        if innermost is not None:
            i, entry = innermost
            self.exit_in(u, i, entry.binding)

    @rule(unit=pick, b=pick)
    def exit_any(self, unit: int, b: int) -> None:
        """Exit any binding in any unit: out of order, twice, inherited from the unit's
        creator, or never entered there."""
        u = self.live(unit)
        # The bindings of the unit's stacks first, outermost first, then all others.
        stacked = [
            (i, e.binding) for i, stack in enumerate(u.model.stacks) for e in stack
        ]
        others = [
            (i, bd)
            for i, bd, _ in self.bindings
            if all(bd is not s for _, s in stacked)
        ]
        candidates = stacked + others
        if candidates:
            i, binding = candidates[b % len(candidates)]
            self.exit_in(u, i, binding)

    @rule(unit=pick, b=pick)
    def exit_inherited(self, unit: int, b: int) -> None:
        """Exit, in a task or a unit spawned through wrap, a binding it inherited: its
        creator's entry, still active there or exited already."""
        live = [u for u in self.units if u.alive]
        for k in range(len(live)):
            u = live[(unit + k) % len(live)]
            # Those whose creator has exited them already first: the rarer case.
            inherited = sorted(
                (
                    (i, e)
                    for i, stack in enumerate(u.model.stacks)
                    for e in stack
                    if e.ctx != u.model.ctx
                ),
                key=lambda ie: not ie[1].used,
            )
            if inherited:
                i, entry = inherited[b % len(inherited)]
                self.exit_in(u, i, entry.binding)
                return

    @rule(
        unit=pick,
        blocks=st.lists(
            st.tuples(pick, st.sampled_from(NAMES)), min_size=1, max_size=3
        ),
        fail=st.booleans(),
    )
    def with_blocks(self, unit: int, blocks: list[tuple[int, str]], fail: bool) -> None:
        """Nested with-blocks in a unit, the body reading and maybe raising; everything
        is restored after them."""
        u = self.live(unit)
        layers = [(i % XLOCALS, {name: self.value()}) for i, name in blocks]
        xs = self.xs

        def run() -> tuple[Observation, Observation]:
            seen: list[Observation] = []
            with contextlib.suppress(KeyError), contextlib.ExitStack() as stack:
                for i, values in layers:
                    stack.enter_context(xs[i](**values))
                seen.append(observe(xs))
                if fail:
                    raise KeyError("the body fails")
            return seen[0], observe(xs)

        inside = u.model.copy(u.model.ctx)
        for i, values in layers:
            inside.stacks[i].append(Entry(xs[0](a=0), values, u.model.ctx))
        note(f"{u.label}: with-blocks {layers} fail={fail}")
        seen, after = u.call(run)
        self.check(seen, inside, f"{u.label} in with-blocks")
        self.check(after, u.model, f"{u.label} after with-blocks")

    @rule(parent=pick, kind=st.sampled_from(KINDS), carry=st.booleans())
    def spawn(self, parent: int, kind: str, carry: bool) -> None:
        """Start a unit from another one, carrying its bindings through wrap or not."""
        if sum(u.alive for u in self.units) >= MAX_UNITS:
            return
        p = self.live(parent)
        inherits = carry or kind == "task"
        model = p.model.copy(next(self.ctxs)) if inherits else Exec(next(self.ctxs))
        label = f"{kind}{len(self.units)}<-{p.label}{' wrap' if carry else ''}"
        note(f"spawn {label}")
        event(f"spawn: {kind}{' through wrap' if carry else ''}")
        if kind == "task":
            unit: Any = TaskUnit(model, label, self.loop)
            if carry:
                runner = p.call(lambda: xl.wrap(unit.serve))
                unit.start_task(runner())
            elif p.kind == "task":
                unit.task = p.call(lambda: asyncio.create_task(unit.serve()))
            else:
                unit.start_task(unit.serve(), p.call(contextvars.copy_context))
        else:
            cls = {"thread": ThreadUnit, "greenlet": GreenletUnit, "gevent": GeventUnit}
            unit = cls[kind](model, label)
            unit.start(p.call(lambda: xl.wrap(unit.serve)) if carry else unit.serve)
        self.units.append(unit)

    @rule(unit=pick)
    def finish(self, unit: int) -> None:
        """A unit ends, possibly inside with-blocks: its bindings end with it."""
        u = self.live(unit)
        if u.kind != "main":
            note(f"{u.label}: finishes")
            u.stop()

    @rule(unit=pick, how=st.sampled_from(["capture", "wrap"]))
    def capture(self, unit: int, how: str) -> None:
        """Capture a unit's bindings with capture() or wrap(), to run later."""
        u = self.live(unit)
        xs = self.xs

        def program(enter: Binding[Any] | None) -> tuple[Observation, Observation]:
            before = observe(xs)
            if enter is not None:
                enter.__enter__()  # never exited: it ends with this run's copy
            return before, observe(xs)

        made = xl.capture if how == "capture" else lambda: xl.wrap(program)
        obj = u.call(made)
        label = f"{how}{len(self.captures)}<-{u.label}"
        note(label)
        self.captures.append(Capture(how, obj, u.model.copy(-1), label))

    @rule(unit=pick, c=pick, i=pick, enter=st.booleans())
    def run_capture(self, unit: int, c: int, i: int, enter: bool) -> None:
        """Run a capture later, in any unit: it sees the captured bindings, and what
        it binds ends with the run."""
        if not self.captures:
            return
        u, cap, i = self.live(unit), self.captures[c % len(self.captures)], i % XLOCALS
        xs = self.xs
        values = {"a": self.value()}
        binding = xs[i](**values) if enter else None
        model = cap.model.copy(next(self.ctxs))
        note(f"{u.label}: run {cap.label} enter={enter}")
        event(f"run a {cap.how} in a {u.kind}")
        if cap.how == "capture":
            snapshot = cap.obj

            def program() -> tuple[Observation, Observation]:
                before = observe(xs)
                if binding is not None:
                    binding.__enter__()
                return before, observe(xs)

            before, after = u.call(lambda: snapshot.run(program))
            for j, x in enumerate(xs):
                assert dict(snapshot.bindings(x)) == model.frame(j)
        else:
            wrapped = cap.obj
            before, after = u.call(lambda: wrapped(binding))
        self.check(before, model, f"{cap.label} run in {u.label}")
        if binding is not None:
            model.stacks[i].append(Entry(binding, values, model.ctx))
        self.check(after, model, f"{cap.label} run in {u.label}, after entering")

    # -- checks after every step

    @invariant()
    def every_unit_sees_its_model(self) -> None:
        """Every live unit sees exactly the merge of its stacks, for every xlocal."""
        xs = self.xs
        self.steps += 1
        for u in self.units:
            if u.alive:
                self.check(u.call(lambda: observe(xs)), u.model, u.label)

    def teardown(self) -> None:
        """Exit in LIFO order what each unit entered, stop every unit, and check that
        nothing is bound and no bound value is alive."""
        # After a failed step, only clean up: the failure is what must be reported.
        failing = sys.exc_info()[1] is not None
        refs = self.refs
        event(f"steps: {self.steps // 10 * 10}+")
        try:
            if not failing:
                self.unwind()
        finally:
            self.stop_units()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            del self.units, self.bindings, self.captures, self.loop
        if not failing:
            collect()
            assert [r() for r in refs if r() is not None] == [], "bound values alive"

    def stop_units(self) -> None:
        # The test's own thread outlives the example: leave nothing bound there.
        for _, entry in reversed(self.units[0].model.entered):
            with contextlib.suppress(RuntimeError):
                entry.binding.__exit__(None, None, None)
        for u in self.units:
            if u.alive and u.kind != "main":
                with contextlib.suppress(Exception):
                    u.stop()

    def unwind(self) -> None:
        for u in reversed(self.units):
            if u.alive:
                while (innermost := u.model.innermost_own()) is not None:
                    self.exit_in(u, innermost[0], innermost[1].binding)
                if u.kind != "main":
                    u.stop()
        self.check(observe(self.xs), self.units[0].model, "main after the program")
        assert [x for x in self.xs if dir(x)] == []


test_random_programs = XlocalMachine.TestCase


# -- what the model found, pinned ------------------------------------------------------


def test_exit_elsewhere_after_the_entry_was_exited(xcurrent: xlocal) -> None:
    """Exiting a binding in a snapshot run or a task, after the execution that entered
    it has exited it, is refused with the documented message and changes nothing."""
    binding = xcurrent(a=1)
    refused = rf"^cannot exit {re.escape(repr(binding))} here: "
    with binding:
        snapshot = xl.capture()
    assert re.match(refused, snapshot.run(try_exit, binding) or "did not raise")
    assert snapshot.run(dir, xcurrent) == ["a"]

    async def child(go: asyncio.Event) -> tuple[str | None, list[str]]:
        await asyncio.wait_for(go.wait(), TIMEOUT)
        return try_exit(binding), dir(xcurrent)

    async def main() -> tuple[str | None, list[str]]:
        go = asyncio.Event()
        with binding:
            task = asyncio.create_task(child(go))
        go.set()
        return await task

    error, seen = asyncio.run(main())
    assert re.match(refused, error or "did not raise")
    assert seen == ["a"]
