"""Run a JSON program against the core this process has, and print what happened.

The interpreter of the differential test (``tests/test_differential.py``, issue 24): the
same program runs in one process with the compiled core and in one with the pure core
(``XLOCAL_NO_EXTENSIONS=1``), and the two traces must be identical.  A trace records
every result and every exception (its classes, message, chained exceptions and, for an
AttributeError, its ``name``), every call into user code that the cores make (a
``__getattr__`` hook, a name's ``__eq__`` or ``__hash__``, a finalizer) and every
exception that Python could only report as unraisable.

Usage::

    python tests/differential.py '[["bind", 0, [["a", 1]], 0, "call"], ["with", 0, []]]'
    python tests/differential.py < program.json
    python tests/differential.py --serve     # one program per line in, one trace out

A program is a list of operations, each a JSON list ``[kind, *arguments]`` (``run``
below says what each does).  Arguments refer to a fixed set of xlocal objects by index
(``XLOCALS``), to bindings kept in numbered slots, and to greenlets and generators by
number.  Each program runs in a fresh ``contextvars.Context`` with fresh xlocal objects,
with the cyclic garbage collector off (so that finalizers run at the same point on both
cores: where reference counting frees them, or at a ``["gc"]`` operation); debug mode is
turned off after it.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import gc
import inspect
import json
import pickle
import re
import sys
import threading
import traceback
import weakref
from typing import Any, ClassVar

import greenlet

import xlocal
from xlocal import Binding, new
from xlocal._core import IMPLEMENTATION

#: Names the programs bind and read: bound names, names of the API that belong to the
#: user, declared names of the typed namespaces and names of their own attributes,
#: private names and dunders, and names that cannot be bound (keywords, non-identifiers,
#: an NFKC-changed name, the empty name).
NAMES = [
    "a",
    "b",
    "c",
    "user",
    "tenant",
    "role",
    "get",
    "items",
    "describe",
    "who",
    "KIND",
    "color",
    "_a",
    "_name",
    "_var",
    "_namespace",
    "__class__",
    "__dict__",
    "__call__",
    "class",
    "None",
    "\ufb01",
    "1a",
    "",
]


class Typed(xlocal.xlocal):
    """A typed namespace: two declared names, one with a default, and own names."""

    user: str
    tenant: str = "public"
    KIND: ClassVar[str] = "typed"

    def describe(self) -> str:
        return f"{self.user}@{self.tenant}"

    @property
    def who(self) -> str:
        return str(self.user)


class SubTyped(Typed):
    """A typed namespace that adds a name and gives a declared one another default."""

    role: str = "reader"
    tenant = "private"


class Hooked(xlocal.xlocal):
    """An open xlocal whose ``__getattr__`` answers the names it does not have."""

    def __getattr__(self, name: str) -> str:
        _hook_called(self, name)
        if name.startswith("__"):
            raise AttributeError(name)
        return f"hooked:{name}"


class TypedHooked(Typed):
    """A typed namespace with a ``__getattr__``."""

    def __getattr__(self, name: str) -> str:
        _hook_called(self, name)
        if name.startswith("__"):
            raise AttributeError(name)
        return f"hooked:{name}"


class Methods(xlocal.xlocal):
    """An open xlocal with names of its own: a method and a class attribute."""

    color = "red"

    def get(self) -> str:
        return "method"


#: How each program's xlocal objects are made; programs name them by index.
XLOCALS = [
    lambda: xlocal.xlocal("x"),
    xlocal.xlocal,  # unnamed: its label shows its address
    lambda: new(Typed, "t"),
    lambda: new(Hooked, "h"),
    lambda: new(TypedHooked, "th"),
    lambda: new(Methods, "m"),
    lambda: new(SubTyped, "st"),
]


class BodyError(Exception):
    """Raised by a with-body on purpose."""


# Object addresses differ from process to process: "0x7f...", in reprs of functions,
# unnamed xlocals, ContextVars, generators.  Nothing else is normalised: the cores
# must agree on every message, every repr and every name.
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def show(value: Any) -> str:
    """The repr of *value*, with object addresses normalised."""
    try:
        text = repr(value)
    except Exception as error:
        text = f"<repr failed: {describe(error)}>"
    return _ADDRESS.sub("0x?", text)


def describe(error: BaseException, depth: int = 0) -> Any:
    """An exception as a trace records it: its classes, message, AttributeError
    name, and the exceptions chained to it."""
    shown: list[Any] = [
        [f"{c.__module__}.{c.__qualname__}" for c in type(error).__mro__],
        _ADDRESS.sub("0x?", str(error)),
    ]
    if isinstance(error, AttributeError) and sys.version_info >= (3, 10):
        shown.append(["name", error.name, show(error.obj)])
    if depth < 3:
        if error.__cause__ is not None:
            shown.append(["cause", describe(error.__cause__, depth + 1)])
        if error.__context__ is not None and not error.__suppress_context__:
            shown.append(["context", describe(error.__context__, depth + 1)])
    return shown


class Program:
    """The state of one program's run: its trace, xlocal objects, slots, greenlets."""

    def __init__(self) -> None:
        self.trace: list[Any] = []
        self.closed = False
        self.xs = [make() for make in XLOCALS]
        self.slots: dict[int, Any] = {}
        self.gens: dict[int, Any] = {}
        self.greenlets: dict[int, Any] = {}
        self.fins = 0
        self.armed: list[Name] = []  # hostile names to arm once made
        self.unarmed: list[Name] = []  # hostile names to arm once bound

    def rec(self, *entry: Any) -> None:
        if not self.closed:
            self.trace.append(list(entry))

    def ok(self, kind: str, value: Any) -> None:
        self.rec(kind, "ok", show(value))

    def exc(self, kind: str, error: BaseException) -> None:
        forget_frames(error)
        self.rec(kind, "raised", describe(error))


def forget_frames(error: BaseException) -> None:
    """Let go of the locals of the finished frames that *error*'s traceback holds.

    The pure core's functions are Python frames, which a traceback keeps alive with
    their locals (a binding's names, its values) until the exception goes; the
    compiled core's functions have no frames.  Tracebacks legitimately differ, and so
    does what they keep alive: this makes a value's finalizer run where the cores
    themselves let go of it, on both.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__context__  # type: ignore[assignment]


#: The program running, for the hooks of user code (``__getattr__``, names, finalizers).
_current: list[Program] = []


def _hook_called(x: Any, name: str) -> None:
    if _current:
        _current[-1].rec("__getattr__", type(x).__name__, name)


class Name(str):
    """A hostile name: its ``__eq__`` (when it matches) or ``__hash__`` runs
    operations of the program, or raises KeyError, each time the core compares or
    hashes it, once it is armed."""

    program: Program
    on: str
    ops: list[Any]
    armed: bool
    busy: bool

    def __eq__(self, other: object) -> bool:
        equal = str.__eq__(self, other)
        if equal is True:  # a real match, as a lookup of the name makes: not "self"
            self._hook("eq")
        return equal

    def __hash__(self) -> int:
        self._hook("hash")
        return str.__hash__(self)

    def _hook(self, where: str) -> None:
        if where != self.on or not self.armed or self.busy or self.program.closed:
            return
        self.busy = True
        try:
            self.program.rec(where, str(self))
            for op in self.ops:
                if op == ["keyerror"]:
                    raise KeyError(str(self))
                run(self.program, [op])
        finally:
            self.busy = False


class Fin:
    """A bound value whose finalizer runs operations of the program."""

    def __init__(self, program: Program, ops: list[Any]) -> None:
        self.program = program
        self.ops = ops
        program.fins += 1
        self.number = program.fins

    def __repr__(self) -> str:
        return f"<Fin {self.number}>"

    def __del__(self) -> None:
        if not self.program.closed:
            self.program.rec("__del__", self.number)
            run(self.program, self.ops)


def key_of(p: Program, spec: Any) -> Any:
    """A name to bind: a str, ``{"int": n}`` (not a str), or ``{"name": text, "on":
    "eq" or "hash", "do": ops, "now": armed at once, or once the binding is made}``
    (a hostile str subclass)."""
    if isinstance(spec, str):
        return spec
    if "int" in spec:
        return spec["int"]
    name = Name(spec["name"])
    name.program, name.on, name.ops = p, spec["on"], spec["do"]
    name.armed = name.busy = False
    (p.armed if spec["now"] else p.unarmed).append(name)
    return name


def arm(names: list[Name]) -> None:
    for name in names:
        name.armed = True
    names.clear()


def value_of(p: Program, spec: Any) -> Any:
    """A value to bind: a JSON scalar, or ``{"fin": ops}`` (a finalizer)."""
    if isinstance(spec, dict):
        return Fin(p, spec["fin"])
    return spec


def bind(p: Program, x: Any, names: dict[Any, Any], how: str) -> Any:
    """Call *x* to make a binding, by one of the routes a program can take."""
    if how == "call":
        return x(**names)
    if how == "dunder":
        return type(x).__call__(x, **names)
    if how == "method":
        return x.__call__(**names)
    if how == "positional":
        return x(1, **names)
    if how == "foreign":  # another xlocal's __call__, with this one as self
        return type(p.xs[0]).__call__(x, **names)
    raise AssertionError(how)


_readers: dict[str, Any] = {}


def read(x: Any, name: Any, how: str) -> Any:  # noqa: PLR0911 - one return a route
    """Read *name* from *x* by one of the routes a program can take."""
    if how == "getattr":
        return getattr(x, name)
    if how == "hasattr":
        return hasattr(x, name)
    if how == "default":
        return getattr(x, name, "<default>")
    if how == "dunder":
        return x.__getattribute__(name)
    if how == "typedunder":
        return type(x).__getattribute__(x, name)
    if how == "code":  # x.name as Python code, run often enough to be specialised
        if not (isinstance(name, str) and name.isidentifier()) or name in (
            "class",
            "None",
        ):
            return getattr(x, name)
        if name not in _readers:
            _readers[name] = eval(f"lambda x: [x.{name} for _ in range(3)][-1]")
        return _readers[name](x)
    raise AssertionError(how)


def introspect(p: Program, target: str, x: Any) -> None:
    """Record what introspection finds of one of the core's callables."""
    subject = {
        "call": lambda: type(x).__call__,
        "getattribute": lambda: type(x).__getattribute__,
        "enter": lambda: Binding.__enter__,
        "exit": lambda: Binding.__exit__,
        "bound_enter": lambda: x().__enter__,
        "binding": x,
    }[target]()
    checks = {
        "repr": lambda f: f,
        "name": lambda f: (f.__name__, f.__qualname__, f.__module__),
        "doc": lambda f: (f.__doc__ or "").split("\n")[0],
        "signature": lambda f: str(inspect.signature(f)),
        "weakref": lambda f: weakref.ref(f)() is f,
        "copy": lambda f: copy.copy(f) is f,
        "deepcopy": lambda f: copy.deepcopy(f) is f,
        "pickle": lambda f: pickle.loads(pickle.dumps(f)) is f,
        "callable": callable,
    }
    for check, do in checks.items():
        try:
            p.ok(f"introspect {target} {check}", do(subject))
        except Exception as error:
            p.exc(f"introspect {target} {check}", error)


def _gen(p: Program, binding: Any, ops: list[Any]) -> Any:
    with binding as got:
        p.ok("gen entered", got)
        yield 1
        run(p, ops)
        yield 2


def _exit_by_helper(binding: Any) -> Any:
    return binding.__exit__(None, None, None)


def run(p: Program, ops: list[Any]) -> None:  # noqa: PLR0912 - one branch per op
    """Run *ops*.  Entries made by "enter" and "with" are owned by this frame."""
    for op in ops:
        kind = op[0]
        try:
            if kind == "bind":  # ["bind", x, [[key, value], ...], slot, how]
                _, xi, pairs, slot, how = op
                names = {key_of(p, k): value_of(p, v) for k, v in pairs}
                arm(p.armed)
                try:
                    p.slots[slot] = bind(p, p.xs[xi], names, how)
                finally:
                    del names  # the binding holds the only references to its values
                    arm(p.unarmed)
                p.ok(kind, p.slots[slot])
            elif kind == "bindwith":  # ["bindwith", x, pairs, how, ops]: the usual
                _, xi, pairs, how, body = op  # with x(a=1): ...; then reads each name
                names = {key_of(p, k): value_of(p, v) for k, v in pairs}
                plain = [str(k) for k in names if isinstance(k, str)]
                arm(p.armed)
                try:
                    binding = bind(p, p.xs[xi], names, how)
                finally:
                    del names
                    arm(p.unarmed)
                try:
                    with binding as got:
                        p.ok("with entered", got)
                        run(p, body)
                        run(p, [["read", xi, name, "default"] for name in plain])
                finally:
                    del binding
                p.rec(kind, "exited")
            elif kind == "with":  # ["with", slot, ops, raise in the body]
                binding = p.slots[op[1]]
                try:
                    with binding as got:
                        p.ok("with entered", got)
                        run(p, op[2])
                        if op[3]:
                            raise BodyError("body")
                finally:
                    del binding
                p.rec(kind, "exited")
            elif kind == "enter":  # ["enter", slot]: owned by this frame
                p.ok(kind, p.slots[op[1]].__enter__())
            elif kind == "exit":  # ["exit", slot, how]
                binding = p.slots[op[1]]
                how = op[2]
                if how == "here":
                    done = binding.__exit__(None, None, None)
                elif how == "helper":
                    done = _exit_by_helper(binding)
                elif how == "dunder":
                    done = Binding.__exit__(binding, None, None, None)
                elif how == "keywords":
                    done = binding.__exit__(exc_type=None, exc=None, tb=None)
                elif how == "short":
                    done = Binding.__exit__(binding)  # type: ignore[call-arg]
                else:  # "error": as the with-statement does when the body raised
                    error = BodyError("passed")
                    done = binding.__exit__(BodyError, error, None)
                del binding
                p.ok(kind, done)
            elif kind == "read":  # ["read", x, name, how]
                _, xi, spec, how = op
                name = key_of(p, spec)
                arm(p.armed)
                p.ok(kind, read(p.xs[xi], name, how))
            elif kind == "set":  # ["set", x, name]
                setattr(p.xs[op[1]], op[2], 1)
                p.rec(kind, "done")
            elif kind == "del":
                delattr(p.xs[op[1]], op[2])
                p.rec(kind, "done")
            elif kind == "repr":
                p.ok(kind, repr(p.xs[op[1]]))
            elif kind == "dir":
                p.ok(kind, dir(p.xs[op[1]]))
            elif kind == "drop":  # ["drop", slot]: finalizers may run here
                p.slots.pop(op[1], None)
                p.rec(kind, "done")
            elif kind == "gc":
                gc.collect()
                p.rec(kind, "done")
            elif kind == "debug":
                xlocal.set_debug(op[1])
                p.rec(kind, "done")
            elif kind == "introspect":  # ["introspect", target, x]
                introspect(p, op[1], p.xs[op[2]])
            elif kind == "decorate":  # ["decorate", slot, ops]: the binding decorates
                p.ok(kind, p.slots[op[1]](lambda body=op[2]: run(p, body))())
            elif kind == "exitstack":  # ["exitstack", [slot, ...], ops]
                with contextlib.ExitStack() as stack:
                    for slot in op[1]:
                        p.ok("exitstack entered", stack.enter_context(p.slots[slot]))
                    run(p, op[2])
                p.rec(kind, "exited")
            elif kind == "thread":  # ["thread", ops]: a new thread, joined
                thread = threading.Thread(target=_thread_main, args=(p, op[1]))
                thread.start()
                thread.join()
                p.rec(kind, "joined")
            elif kind == "greenlet":  # ["greenlet", number, ops]: made and switched to
                p.greenlets[op[1]] = greenlet.greenlet(_greenlet_main)
                p.ok(kind, p.greenlets[op[1]].switch(p, op[2]))
            elif kind == "switch":  # ["switch", number]: back into a greenlet
                p.ok(kind, p.greenlets[op[1]].switch())
            elif kind == "parent":  # from a greenlet back to the one that made it
                parent = greenlet.getcurrent().parent
                if parent is None:
                    p.rec(kind, "no parent")
                else:
                    p.ok(kind, parent.switch("from child"))
            elif kind == "gen":  # ["gen", number, slot, ops]: a generator inside a with
                p.gens[op[1]] = _gen(p, p.slots[op[2]], op[3])
                p.ok(kind, next(p.gens[op[1]]))
            elif kind == "gen_next":
                p.ok(kind, next(p.gens[op[1]]))
            elif kind == "gen_drop":  # the generator is finalized here
                p.gens.pop(op[1], None)
                p.rec(kind, "done")
            else:
                raise AssertionError(f"unknown operation {op!r}")  # noqa: TRY301
        except Exception as error:
            p.exc(kind, error)


def _thread_main(p: Program, ops: list[Any]) -> None:
    # A thread has greenlets of its own, which end with it: once the thread is gone,
    # what switching to them says depends on when greenlet noticed.
    _current.append(p)
    outer, p.greenlets = p.greenlets, {}
    try:
        run(p, ops)
        for number in sorted(p.greenlets):
            _end_greenlet(p, number)
    finally:
        p.greenlets = outer
        _current.pop()


def _end_greenlet(p: Program, number: int) -> None:
    glet = p.greenlets.pop(number)
    if glet and not glet.dead:
        try:
            p.ok("end greenlet", glet.throw(greenlet.GreenletExit))
        except Exception as error:
            p.exc("end greenlet", error)


def _greenlet_main(p: Program, ops: list[Any]) -> str:
    run(p, ops)
    return "finished"


def _unraisable(unraisable: Any) -> None:
    if _current:
        p = _current[-1]
        if unraisable.exc_value is not None:
            forget_frames(unraisable.exc_value)
        p.rec(
            "unraisable",
            describe(unraisable.exc_value),
            unraisable.err_msg,
            show(unraisable.object),
        )


def execute(program: list[Any]) -> list[Any]:
    """Run *program* in a fresh context and return its trace."""
    p = Program()
    _current.append(p)
    gc.disable()
    try:
        contextvars.Context().run(_main, p, program)
    finally:
        xlocal.set_debug(False)
        p.closed = True
        p.slots.clear()
        p.gens.clear()
        p.greenlets.clear()
        gc.collect()
        gc.enable()
        _current.pop()
    return p.trace


def _main(p: Program, program: list[Any]) -> None:
    run(p, program)
    # The end, in a fixed order: generators are finalized, then greenlets, then the
    # bindings are dropped and the cyclic garbage collected; each may report.
    for number in sorted(p.gens):
        p.gens.pop(number)
        p.rec("end gen", number)
    for number in sorted(p.greenlets):
        _end_greenlet(p, number)
    p.slots.clear()
    gc.collect()
    p.rec("end", [show(x) for x in p.xs])


def main(argv: list[str]) -> int:
    sys.unraisablehook = _unraisable
    # What is alive now lives as long as the process: the collections after each
    # program need not look at it (they took most of the time).
    gc.freeze()
    if argv[1:] == ["--serve"]:
        compiled = not inspect.isfunction(Binding.__dict__["__enter__"])
        print(json.dumps([IMPLEMENTATION, compiled]), flush=True)
        for line in sys.stdin:
            print(json.dumps(execute(json.loads(line))), flush=True)
        return 0
    text = argv[1] if len(argv) > 1 else sys.stdin.read()
    print(
        json.dumps(
            {"implementation": IMPLEMENTATION, "trace": execute(json.loads(text))}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
