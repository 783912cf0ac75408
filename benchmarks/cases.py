"""The timed cases: one statement per (case, peer), set up in the worker that runs it.

Each case is a statement timed in a loop, unrolled so that the loop's own cost is
spread over several operations, with a setup that makes the names it uses.  Setups are
context managers so that the smoke run can undo them; a setup raises
:class:`~benchmarks.peers.Unavailable` when its peer is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import xlocal as xlocal_package
from xlocal import xlocal

from .peers import Unavailable, optional, pure_core, xlocal05

__all__ = ["CASES", "Case", "Setup"]

#: The value that every case binds: one shared object, so no case measures allocation.
V = object()

Namespace = dict[str, Any]
Setup = Callable[[int], contextlib.AbstractContextManager[Namespace]]


@dataclass(frozen=True)
class Case:
    """One statement to time, for one peer, in one group of comparable cases."""

    group: str
    peer: str
    setup: Setup
    stmt: str
    #: How many copies of *stmt* one loop runs.
    unroll: int = 10
    #: Whether *stmt* does ``n`` operations (the spawn cases) rather than one.
    batch: bool = False

    @property
    def name(self) -> str:
        return f"{self.group} | {self.peer}"


# --- setups: each yields the names its statement uses --------------------------------


def _plain(factory: Callable[[], Any]) -> Setup:
    """An attribute-store peer (threading.local and the like) with ``a`` set."""

    @contextlib.contextmanager
    def setup(n: int) -> Iterator[Namespace]:
        o = factory()
        o.a = V
        yield {"o": o, "v": V}

    return setup


def _threading_local() -> Any:
    return threading.local()


def _gevent_local() -> Any:
    return optional("gevent.local").local()


def _werkzeug_local() -> Any:
    return optional("werkzeug.local").Local()


def _asgiref_local() -> Any:
    return optional("asgiref.local").Local()


def _xlocal() -> Any:
    return xlocal("o")


def _xlocal_pure() -> Any:
    return pure_core().xlocal("o")


def _xlocal05() -> Any:
    return xlocal05().xlocal()


def _bound(factory: Callable[[], Any], names: list[str]) -> Setup:
    """An xlocal-style peer with one nested binding per name entered, in order."""

    @contextlib.contextmanager
    def setup(n: int) -> Iterator[Namespace]:
        o = factory()
        with contextlib.ExitStack() as stack:
            for name in names:
                stack.enter_context(o(**{name: V}))
            yield {"o": o, "v": V}

    return setup


class _Typed(xlocal):
    """A typed namespace: ``a`` declared, ``d`` declared with a default."""

    a: object
    d: object = V


@contextlib.contextmanager
def _typed(n: int) -> Iterator[Namespace]:
    """A typed namespace with ``a`` bound; ``d`` reads its default."""
    o = xlocal_package.new(_Typed, "o")
    with o(a=V):
        yield {"o": o, "v": V}


@contextlib.contextmanager
def _werkzeug_proxy(n: int) -> Iterator[Namespace]:
    """A werkzeug LocalProxy to an object in a ContextVar, as Flask's ``request``."""
    proxy = optional("werkzeug.local").LocalProxy
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("proxied")
    token = var.set(types.SimpleNamespace(a=V))
    try:
        yield {"o": proxy(var), "v": V}
    finally:
        var.reset(token)


@contextlib.contextmanager
def _contextvars(n: int) -> Iterator[Namespace]:
    """Raw ContextVars: ``o`` set, ``missing`` not, ``c1``..``c5`` free to set."""
    ns: Namespace = {f"c{i}": contextvars.ContextVar(f"c{i}") for i in range(1, 6)}
    o: contextvars.ContextVar[Any] = contextvars.ContextVar("o")
    token = o.set(V)
    try:
        yield {**ns, "o": o, "missing": contextvars.ContextVar("missing"), "v": V}
    finally:
        o.reset(token)


@contextlib.contextmanager
def _snapshot(n: int) -> Iterator[Namespace]:
    """A function reading a bound xlocal name, and ways to run it in a snapshot."""
    o: Any = xlocal("o")
    with o(a=V):
        yield {
            "f": lambda: o.a,
            "copy_context": contextvars.copy_context,
            "wrap": xlocal_package.wrap,
            "capture": xlocal_package.capture,
        }


# --- spawning: n greenlets or tasks, each doing one unit of work ---------------------


def _units() -> dict[str, Callable[[], object]]:
    """The work of one greenlet or task: nothing, or bind and read a name."""
    x: Any = xlocal("x")
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("var")

    def with_nothing() -> object:
        return V

    def with_xlocal() -> object:
        with x(a=V):
            return x.a

    def with_contextvar() -> object:
        token = var.set(V)
        try:
            return var.get()
        finally:
            var.reset(token)

    return {
        "no local": with_nothing,
        "xlocal": with_xlocal,
        "contextvars": with_contextvar,
    }


def _greenlets(peer: str) -> Setup:
    @contextlib.contextmanager
    def setup(n: int) -> Iterator[Namespace]:
        gevent = optional("gevent")
        unit = _units()[peer]
        yield {
            "spawn": gevent.spawn,
            "joinall": gevent.joinall,
            "f": unit,
            "r": range(n),
        }

    return setup


def _tasks(peer: str) -> Setup:
    @contextlib.contextmanager
    def setup(n: int) -> Iterator[Namespace]:
        unit = _units()[peer]

        async def one() -> object:
            return unit()

        async def main() -> None:
            await asyncio.gather(*[one() for _ in range(n)])

        loop = asyncio.new_event_loop()
        try:
            yield {"loop": loop, "main": main}
        finally:
            loop.close()

    return setup


def _task_reads(peer: str) -> Setup:
    """n asyncio tasks, each reading a value its creator bound: an xlocal name or a
    ContextVar."""

    @contextlib.contextmanager
    def setup(n: int) -> Iterator[Namespace]:
        x: Any = xlocal("x")
        var: contextvars.ContextVar[Any] = contextvars.ContextVar("var")
        read: Callable[[], object] = (lambda: x.a) if peer == "xlocal" else var.get

        async def one() -> object:
            return read()

        async def main() -> None:
            await asyncio.gather(*[one() for _ in range(n)])

        loop = asyncio.new_event_loop()
        token = var.set(V)
        try:
            with x(a=V):
                yield {"loop": loop, "main": main}
        finally:
            var.reset(token)
            loop.close()

    return setup


#: How many children one statement of the scope cases starts (threads at once).
SCOPE_CHILDREN = 100


@contextlib.contextmanager
def _scope_threads(n: int) -> Iterator[Namespace]:
    """SCOPE_CHILDREN threads, started then joined: plain, or through a scope."""
    yield {
        "Thread": threading.Thread,
        "scope": xlocal_package.scope,
        "f": _units()["no local"],
        "r": range(SCOPE_CHILDREN),
    }


def _scope_tasks(peer: str) -> Setup:
    """SCOPE_CHILDREN asyncio tasks in an asyncio.TaskGroup or an xlocal scope."""

    @contextlib.contextmanager
    def setup(n: int) -> Iterator[Namespace]:
        if not hasattr(asyncio, "TaskGroup"):
            raise Unavailable("asyncio.TaskGroup is new in Python 3.11")
        unit = _units()["no local"]

        async def one() -> object:
            return unit()

        async def task_group() -> None:
            async with asyncio.TaskGroup() as group:
                for _ in range(SCOPE_CHILDREN):
                    group.create_task(one())

        async def scope() -> None:
            async with xlocal_package.scope() as s:
                for _ in range(SCOPE_CHILDREN):
                    s.spawn(one)

        loop = asyncio.new_event_loop()
        try:
            yield {"loop": loop, "main": scope if peer == "xlocal" else task_group}
        finally:
            loop.close()

    return setup


# --- the cases ----------------------------------------------------------------------

READ = "read bound name"
MISSING = "read missing name"
BIND1 = "bind+unbind 1 name"
BIND5 = "bind+unbind 5 names"
SNAPSHOT = "capture and run"
CAPTURE = "capture"
TASK_READS = "asyncio task reading"
GREENLETS = "spawn gevent greenlet"
TASKS = "spawn asyncio task"
SCOPE_THREADS = f"{SCOPE_CHILDREN} threads, started+joined"
SCOPE_TASKS = f"{SCOPE_CHILDREN} asyncio tasks in a group"
TYPED = "xlocal typed namespace"
TYPED_DEFAULT = "xlocal typed, default"


def depth_group(depth: int) -> str:
    return f"read at depth {depth}"


DEPTHS = (1, 10, 100)

#: Attribute-store peers: binding is setting then deleting the attribute.
_PLAIN = {
    "threading.local": _plain(_threading_local),
    "gevent.local": _plain(_gevent_local),
    "werkzeug Local": _plain(_werkzeug_local),
    "asgiref Local": _plain(_asgiref_local),
}
#: "xlocal" is the core in use (the compiled one where it is built); "xlocal pure" is
#: the pure-Python core, loaded beside it.
PURE = "xlocal pure"
_SCOPED = {"xlocal 0.5": _xlocal05, "xlocal": _xlocal, PURE: _xlocal_pure}
_FIVE = "a=v, b=v, c=v, d=v, e=v"


def _cases() -> Iterator[Case]:
    for peer, setup in _PLAIN.items():
        yield Case(READ, peer, setup, "o.a")
    yield Case(READ, "werkzeug LocalProxy", _werkzeug_proxy, "o.a")
    yield Case(READ, TYPED, _typed, "o.a")
    yield Case(READ, TYPED_DEFAULT, _typed, "o.d")
    yield Case(READ, "contextvars", _contextvars, "o.get()")
    for peer, factory in _SCOPED.items():
        yield Case(READ, peer, _bound(factory, ["a"]), "o.a")

    for peer, setup in _PLAIN.items():
        yield Case(MISSING, peer, setup, "hasattr(o, 'b')")
    yield Case(MISSING, "werkzeug LocalProxy", _werkzeug_proxy, "hasattr(o, 'b')")
    yield Case(MISSING, "contextvars", _contextvars, "missing.get(None)")
    for peer, factory in _SCOPED.items():
        yield Case(MISSING, peer, _bound(factory, ["a"]), "hasattr(o, 'b')")

    for peer, setup in _PLAIN.items():
        yield Case(BIND1, peer, setup, "o.a = v; del o.a")
    yield Case(BIND1, "contextvars", _contextvars, "o.reset(o.set(v))")
    for peer, factory in _SCOPED.items():
        yield Case(BIND1, peer, _bound(factory, []), "with o(a=v): pass")

    sets = "; ".join(f"o.{n} = v" for n in "abcde")
    dels = "; ".join(f"del o.{n}" for n in "abcde")
    yield Case(BIND5, "threading.local", _PLAIN["threading.local"], f"{sets}; {dels}")
    tokens = "; ".join(f"t{i} = c{i}.set(v)" for i in range(1, 6))
    resets = "; ".join(f"c{i}.reset(t{i})" for i in range(5, 0, -1))
    yield Case(BIND5, "contextvars", _contextvars, f"{tokens}; {resets}")
    for peer, factory in _SCOPED.items():
        yield Case(BIND5, peer, _bound(factory, []), f"with o({_FIVE}): pass")

    for depth in DEPTHS:
        names = [f"n{i}" for i in range(depth)]
        for peer, factory in _SCOPED.items():
            yield Case(depth_group(depth), peer, _bound(factory, names), "o.n0")

    yield Case(SNAPSHOT, "plain call", _snapshot, "f()")
    yield Case(SNAPSHOT, "copy_context().run", _snapshot, "copy_context().run(f)")
    yield Case(SNAPSHOT, "xlocal", _snapshot, "wrap(f)()")
    yield Case(CAPTURE, "copy_context", _snapshot, "copy_context()")
    yield Case(CAPTURE, "xlocal", _snapshot, "capture()")

    for peer in ("no local", "contextvars", "xlocal"):
        greenlets = "joinall([spawn(f) for _ in r])"
        yield Case(GREENLETS, peer, _greenlets(peer), greenlets, unroll=1, batch=True)
    for peer in ("no local", "contextvars", "xlocal"):
        tasks = "loop.run_until_complete(main())"
        yield Case(TASKS, peer, _tasks(peer), tasks, unroll=1, batch=True)
    for peer in ("contextvars", "xlocal"):
        tasks = "loop.run_until_complete(main())"
        yield Case(TASK_READS, peer, _task_reads(peer), tasks, unroll=1, batch=True)

    # Structured scopes (issue 27): a scope's children against the plain way.
    plain = "ts = [Thread(target=f) for _ in r]; [t.start() for t in ts]; "
    plain += "[t.join() for t in ts]"
    scoped = "with scope() as s: [s.spawn(f) for _ in r]"
    yield Case(SCOPE_THREADS, "threading.Thread", _scope_threads, plain, unroll=1)
    yield Case(SCOPE_THREADS, "xlocal", _scope_threads, scoped, unroll=1)
    tasks = "loop.run_until_complete(main())"
    yield Case(SCOPE_TASKS, "TaskGroup", _scope_tasks("TaskGroup"), tasks, unroll=1)
    yield Case(SCOPE_TASKS, "xlocal", _scope_tasks("xlocal"), tasks, unroll=1)


CASES: tuple[Case, ...] = tuple(_cases())
