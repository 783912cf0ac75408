"""Hostile programs against the core, each run in a process of its own by
tests/test_implementation.py: ``python hostile_core.py SCENARIO``.

Each runs Python code inside a window of the core's bind, read or exit where the
compiled core calls into Python (a name's ``__eq__``, a finalizer run by the garbage
collector), and there changes or drops what the core is working with.  A scenario
prints what the program saw; the test runs it under both cores, with Python's debug
memory allocator, and asks for the same output and no crash.
"""

from __future__ import annotations

import contextvars
import gc
import importlib
import os
import sys
import tempfile
from typing import Any, Callable

from xlocal import IMPLEMENTATION, xlocal
from xlocal._frames import _ENTRY

x = xlocal("x")
other = xlocal("other")
armed: list[Callable[[], None]] = []


def fire() -> None:
    """Run the armed attack, once."""
    while armed:
        armed.pop()()
        gc.collect()


class Hostile(str):
    """A name equal to the plain str it spells, whose comparisons run the attack."""

    def __hash__(self) -> int:
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        fire()
        return str.__eq__(self, other)

    __ne__ = str.__ne__


class LikeEntry(str):
    """A name whose hash is that of the core's private entry key, so that looking the
    key up in a frame compares it with this name."""

    def __hash__(self) -> int:
        return hash(_ENTRY)

    def __eq__(self, other: object) -> bool:
        fire()
        return str.__eq__(self, other)

    __ne__ = str.__ne__


class Raising(str):
    """A name whose comparison raises KeyError: a read that meets it misses."""

    def __hash__(self) -> int:
        return str.__hash__(self)

    raising = False

    def __eq__(self, other: object) -> bool:
        if Raising.raising:
            raise KeyError(str(self))
        return str.__eq__(self, other)

    __ne__ = str.__ne__


def rob(binding: Any) -> None:
    """Take every slot of *binding* away, dropping the objects they held."""
    binding._names = {"robbed": True}
    binding._var = other._var
    binding._entries = {}
    binding._xlocal = other


def attempt(label: str, action: Callable[[], Any]) -> None:
    try:
        result = action()
    except Exception as error:
        print(label, "raised", type(error).__name__, str(error).split(":")[0])
        print("  ", " | ".join(str(e).split(":")[0] for e in chain(error)))
    else:
        print(label, "gave", result)


def chain(error: BaseException | None) -> list[BaseException]:
    """The exceptions *error* was raised while handling."""
    found = []
    while error is not None:
        found.append(error)
        error = error.__context__
    return found


def show(label: str) -> None:
    print(label, "x:", sorted(n for n in dir(x) if not n.startswith("_")))


def enter_while_compared() -> None:
    """A name's __eq__, run while the bind merges names, robs the binding."""
    binding = x(**{Hostile("a"): 2})

    def run() -> None:
        with x(a=1):
            armed.append(lambda: rob(binding))
            with binding as got:
                print("entered", got is x, x.a)
            show("after")

    attempt("block", run)
    show("end")


def enter_while_recording() -> None:
    """The frame's private key, looked up while the bind records its entry, meets a
    name whose __eq__ robs the binding."""
    binding = x(**{LikeEntry("a"): 1})
    armed.append(lambda: rob(binding))
    attempt("enter", lambda: binding.__enter__() is x)
    show("after")


def exit_while_comparing() -> None:
    """The exit's look at the frame's private key runs a name's __eq__ that robs the
    binding and binds meanwhile."""
    binding = x(**{LikeEntry("a"): 1})

    def attack() -> None:
        rob(binding)
        with x(b=2):
            pass

    def run() -> None:
        with binding:
            armed.append(attack)
            show("inside")

    attempt("block", run)
    show("after")


class Finalized:
    """Garbage in a reference cycle whose finalizer runs the attack."""

    def __init__(self, attack: Callable[[], None]) -> None:
        self.cycle = self
        self.attack = attack

    def __del__(self) -> None:
        self.attack()


def collected_while_entering() -> None:
    """Finalizers run by collections inside the bind rob the binding and bind.

    Where a collection lands depends on how many objects each core allocates, and a
    binding robbed inside its enter cannot be exited (its exit finds other slots), so
    what stays bound differs between the cores: the rounds run in a context of their
    own, and only their survival is compared."""
    gc.collect()
    # CPython collects every allocation or so; PyPy has no thresholds to set, and
    # collects at its own pace.
    threshold = getattr(gc, "set_threshold", lambda *_: None)
    threshold(1, 1, 1)
    seen: list[Any] = []
    contextvars.Context().run(_robbed_rounds, seen)
    threshold(700, 10, 10)
    print("rounds", len(seen) >= 200)
    show("after")


def _robbed_rounds(seen: list[Any]) -> None:
    for round_ in range(200):
        binding = x(a=round_, b=round_)

        def attack(binding: Any = binding) -> None:
            rob(binding)
            with x(c=3):
                seen.append(x.c)

        Finalized(attack)
        try:
            with binding:
                seen.append(getattr(x, "a", "robbed"))
        except RuntimeError:
            seen.append("refused")


def read_while_compared() -> None:
    """A read that compares with a name whose __eq__ binds and collects, and one whose
    __eq__ raises KeyError: a miss."""

    def run() -> None:
        with x(**{Hostile("a"): 1}):
            armed.append(lambda: x(a=5).__enter__() and None)
            attempt("read", lambda: x.a)

    attempt("block", run)
    with x(**{Raising("b"): 1}):
        Raising.raising = True
        attempt("raising", lambda: x.b)
        attempt("hasattr", lambda: hasattr(x, "b"))
        Raising.raising = False
    show("after")


def reimported() -> None:
    """A second import of the package, in the same interpreter, beside the first."""
    first = x
    for name in [n for n in sys.modules if n == "xlocal" or n.startswith("xlocal.")]:
        del sys.modules[name]
    second = importlib.import_module("xlocal").xlocal("second")
    with first(a=1), second(b=2):
        print("both", first.a, second.b)
    attempt("first unbound", lambda: first.a)
    attempt("second unbound", lambda: second.b)
    second = None
    gc.collect()
    with first(a=3):
        print("first again", first.a)


INSIDE = """
import xlocal
y = xlocal.xlocal("y")
with y(a=1):
    seen = y.a
try:
    y.a
except AttributeError as error:
    message = str(error)
with open(PATH, "w") as out:
    out.write(f"{xlocal.IMPLEMENTATION} {seen} {message}")
"""


def subinterpreters() -> None:
    """Interpreters that share the main one's GIL (as mod_wsgi's application groups)
    and, where the core allows it, isolated ones, each importing the package, binding,
    and ending: the main interpreter's xlocals work before, between and after."""
    try:
        api = importlib.import_module("_interpreters")
    except ImportError:
        api = importlib.import_module("_xxsubinterpreters")

    def create(kind: str) -> Any:
        if hasattr(api, "new_config"):
            return api.create(api.new_config(kind))
        return api.create(isolated=kind == "isolated")

    for kind in ("legacy", "isolated", "legacy"):
        with x(user=kind):
            interp = create(kind)
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "out")
                failed = api.run_string(interp, f"PATH = {path!r}\n" + INSIDE)
                with open(path) as result:
                    core, rest = result.read().split(" ", 1)
                print(kind, core == IMPLEMENTATION, rest, failed)
            api.destroy(interp)
            gc.collect()
            print("main", x.user)
        attempt("unbound", lambda: x.user)
        attempt("bind", lambda: x(late=1))


SCENARIOS = {
    f.__name__: f
    for f in (
        enter_while_compared,
        enter_while_recording,
        exit_while_comparing,
        collected_while_entering,
        read_while_compared,
        reimported,
        subinterpreters,
    )
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
    gc.collect()
    print("done")
