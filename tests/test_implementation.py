"""Which core runs (compiled or pure), and the compiled core's reference counting.

The whole suite runs against both cores: ``XLOCAL_NO_EXTENSIONS=1`` selects the pure
one.  ``XLOCAL_EXPECT_IMPLEMENTATION`` (``c`` or ``python``) names the core a run is
meant to test, so that a run which silently fell back to the pure core fails here.
"""

from __future__ import annotations

import contextvars
import copy
import gc
import importlib.util
import inspect
import os
import pickle
import subprocess
import sys
import weakref
from typing import Any

import pytest

import xlocal
from xlocal import Binding
from xlocal._environment import _flag_from_environment


class Value:
    """A value that weak references can follow."""


def test_the_run_uses_the_core_it_means_to() -> None:
    """IMPLEMENTATION is the core this run asked for, or else the one the environment
    and the build select: pure when asked for or not CPython, else compiled if built."""
    expected = os.environ.get("XLOCAL_EXPECT_IMPLEMENTATION")
    if expected is None:
        built = importlib.util.find_spec("xlocal._cxlocal") is not None
        wants_pure = _flag_from_environment("XLOCAL_NO_EXTENSIONS", "")
        cpython = sys.implementation.name == "cpython"
        expected = "c" if built and cpython and not wants_pure else "python"
    assert expected == xlocal.IMPLEMENTATION


def test_the_core_in_use_is_installed() -> None:
    """The compiled core puts its callables on Binding and on each xlocal's class,
    wrapping the pure functions they implement; the pure core installs those."""
    x = xlocal.xlocal("x")
    installed = [
        Binding.__dict__["__enter__"],
        Binding.__dict__["__exit__"],
        type(x).__dict__["__getattribute__"],
        type(x).__dict__["__call__"],
    ]
    if xlocal.IMPLEMENTATION == "c":
        assert not any(inspect.isfunction(f) for f in installed)
        assert all(inspect.isfunction(f.__wrapped__) for f in installed)
        assert Binding.__enter__.__name__ == "__enter__"
    else:
        assert all(inspect.isfunction(f) for f in installed)


@pytest.mark.parametrize(("value", "expected"), [("1", "python"), ("on", "python")])
def test_no_extensions_selects_the_pure_core(value: str, expected: str) -> None:
    """XLOCAL_NO_EXTENSIONS set to a true value at import selects the pure core."""
    out = subprocess.run(
        [sys.executable, "-c", "import xlocal; print(xlocal.IMPLEMENTATION)"],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        env={**os.environ, "XLOCAL_NO_EXTENSIONS": value},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == expected


def test_no_extensions_refuses_unclear_values() -> None:
    """An XLOCAL_NO_EXTENSIONS value that is neither on nor off fails the import."""
    out = subprocess.run(
        [sys.executable, "-c", "import xlocal"],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        env={**os.environ, "XLOCAL_NO_EXTENSIONS": "pure"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert (
        "ValueError: XLOCAL_NO_EXTENSIONS='pure' is not understood: set it to 1, "
        "true, yes or on to use the pure-Python core, or to 0, false, no, off or "
        "nothing to leave it off"
    ) in out.stderr


class Typed(xlocal.xlocal):
    """A typed namespace, whose reader and binder are the typed variants."""

    user: str
    tenant: str = "public"

    def describe(self) -> str:
        return f"{self.user}@{self.tenant}"


def _cycles(count: int, value: Value, other: Value) -> None:
    """Run *count* bind, enter, read, miss and exit cycles binding *value* and
    *other* on an open and a typed xlocal."""
    x = xlocal.xlocal("x")
    typed = Typed("typed")
    for _ in range(count):
        with x(v=value, w=other) as bound:
            bound.v  # noqa: B018 - the read is the point
            hasattr(bound, "missing")
        with typed(user="u"):
            typed.user  # noqa: B018
            typed.tenant  # noqa: B018
            hasattr(typed, "other")


@pytest.mark.cpython_only("sys.getrefcount counts references on CPython only")
def test_a_million_cycles_keep_no_reference() -> None:
    """A million cycles keep no reference to the bound values and leave no object
    behind for the garbage collector."""
    value, other = Value(), Value()
    _cycles(1000, value, other)  # caches, interned strings, first frame objects
    refs = sys.getrefcount(value), sys.getrefcount(other)
    gc.collect()
    objects = len(gc.get_objects())
    _cycles(10**6, value, other)
    gc.collect()
    assert len(gc.get_objects()) - objects < 100
    assert (sys.getrefcount(value), sys.getrefcount(other)) == refs


@pytest.mark.cpython_only("the memory figures come from tracemalloc")
def test_cycles_keep_no_memory() -> None:
    """A hundred thousand cycles, traced by tracemalloc, keep no memory."""
    import tracemalloc  # noqa: PLC0415 - CPython only

    value, other = Value(), Value()
    _cycles(1000, value, other)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _cycles(10**5, value, other)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 16 * 1024, f"{grown} bytes kept"


@pytest.mark.cpython_only("sys.getrefcount counts references on CPython only")
def test_misuse_paths_leak_nothing() -> None:
    """The paths that hand over to the pure core (errors, exits out of order) keep
    no reference to the values involved."""
    x = xlocal.xlocal("x")
    typed = Typed("typed")
    value = Value()
    refs = sys.getrefcount(value)
    for _ in range(2000):
        with pytest.raises(TypeError):
            x(value, v=value)
        with pytest.raises(ValueError, match="reserved"):
            x(_v=value)
        with pytest.raises(TypeError, match="not one of its declared"):
            typed(other=value)
        with pytest.raises(AttributeError, match="not a declared name"):
            typed.other  # noqa: B018
        outer, inner = x(v=value), x(w=value)
        outer.__enter__()
        inner.__enter__()
        with pytest.raises(RuntimeError, match="out of order"):
            outer.__exit__(None, None, None)
        with pytest.raises(RuntimeError, match="not active"):
            inner.__exit__(None, None, None)
        del outer, inner
    gc.collect()
    assert sys.getrefcount(value) == refs


@pytest.mark.cpython_only(
    "reference counting frees a value when its last reference goes"
)
def test_values_are_released_when_the_binding_ends() -> None:
    """A bound value is released by reference counting alone when its with-block
    ends, without waiting for the garbage collector."""
    x = xlocal.xlocal("x")
    gc.disable()
    try:
        value = Value()
        ref = weakref.ref(value)
        with x(v=value):
            del value
            assert ref() is not None
            with x(w=1):
                assert ref() is not None
        assert ref() is None
    finally:
        gc.enable()


def test_cycles_through_bindings_and_xlocals_are_collected() -> None:
    """A value that refers to its binding and its xlocal, and the xlocal with its
    class and compiled callables, are collected once unreachable."""
    x: Any = xlocal.xlocal("x")
    value = Value()
    binding = x(v=value)
    value.binding = binding  # type: ignore[attr-defined]
    value.x = x  # type: ignore[attr-defined]
    with binding:
        assert x.v is value
    # A Binding takes no weak reference: the value, which only it keeps, stands in.
    refs = [weakref.ref(value), weakref.ref(x), weakref.ref(type(x))]
    del x, value, binding
    gc.collect()
    assert [r() for r in refs] == [None] * 3


def test_an_open_entry_of_a_collected_binding_is_no_leak() -> None:
    """A binding entered and never exited, in a context that is then dropped, is
    collected with its value."""
    x = xlocal.xlocal("x")
    value = Value()
    ref = weakref.ref(value)

    def enter(bound: Value) -> None:
        x(v=bound).__enter__()

    contextvars.copy_context().run(enter, value)
    del value
    gc.collect()
    assert ref() is None
    assert not hasattr(x, "v")


class _Name(str):
    """A str subclass, which the compiled core hands over to the pure one."""


def test_odd_routes_behave_as_the_plain_ones(make_xlocal: Any) -> None:
    """Reads and calls that reach an xlocal other than as ``x.name`` and
    ``x(name=...)`` (dunders called, str subclasses, keyword dicts) work the same."""
    x = make_xlocal("x")
    names = {"a": 1}
    with type(x).__call__(x, **names), x.__call__(b=2):
        assert x.__getattribute__("a") == 1
        assert type(x).__getattribute__(x, "b") == 2
        assert getattr(x, _Name("a")) == 1
        assert not hasattr(x, _Name("c"))
        with pytest.raises(AttributeError, match="'c' is not bound on <xlocal 'x'>"):
            type(x).__getattribute__(x, "c")
        assert x.__class__ is type(x)
    with pytest.raises(TypeError, match="takes only keyword arguments"):
        type(x).__call__(x, 1)
    with pytest.raises(ValueError, match="reserved"):
        x(**{_Name("_a"): 1})
    with pytest.raises(TypeError, match="keywords must be strings"):
        x(**{1: 1})


HOSTILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile_core.py")


def _hostile(scenario: str, **env: str) -> str:
    """Run a scenario of hostile_core.py with Python's debug allocator, which catches
    use of freed memory and writes past the end of blocks; what it printed."""
    done = subprocess.run(
        [sys.executable, HOSTILE, scenario],
        env={**os.environ, "PYTHONMALLOC": "debug", "PYTHONFAULTHANDLER": "1", **env},
        cwd=os.path.dirname(HOSTILE),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith("done\n"), done.stdout
    return done.stdout


@pytest.mark.parametrize(
    "scenario",
    [
        "enter_while_compared",
        "enter_while_recording",
        "exit_while_comparing",
        "collected_while_entering",
        "read_while_compared",
        "reimported",
        pytest.param(
            "subinterpreters",
            marks=pytest.mark.skipif(
                sys.version_info < (3, 12) or sys.implementation.name != "cpython",
                reason="interpreters with their own GIL and modules came in 3.12",
            ),
        ),
    ],
)
def test_hostile_code_in_the_cores_windows(scenario: str) -> None:
    """Code run inside a bind, read or exit (a name's __eq__, a finalizer run by the
    collector) that rebinds, robs the binding of its slots and drops what they held,
    a second import of the package, and subinterpreters importing it: no crash, no
    use of freed memory, and the core in use behaves as the pure core."""
    seen = _hostile(scenario)
    assert seen == _hostile(scenario, XLOCAL_NO_EXTENSIONS="1")
    if scenario == "subinterpreters":
        assert seen.count(" True 1 'a' is not bound on <xlocal 'y'>") == 3
        assert seen.count("main ") == 3


def test_hostile_programs_see_what_they_did() -> None:
    """The hostile scenarios run their attacks (a scenario that no longer reached its
    window would pass the comparison above unseen)."""
    assert "cannot exit <Binding other(robbed=...)>" in _hostile("enter_while_compared")
    assert "raising raised AttributeError 'b' is not bound" in _hostile(
        "read_while_compared"
    )
    assert "hasattr gave False" in _hostile("read_while_compared")


def test_the_core_functions_behave_as_functions() -> None:
    """Binding's methods and each xlocal's __call__ and __getattribute__, compiled or
    not: weakly referenced, copied and deep-copied as themselves, pickled by
    reference where a function is (also by the module Binding was first in), shown
    and described as the pure function, and given attributes as a function is."""
    x = xlocal.xlocal("x")
    for f in (Binding.__enter__, Binding.__exit__):
        assert weakref.ref(f)() is f
        assert copy.copy(f) is f
        assert copy.deepcopy(f) is f
        assert pickle.loads(pickle.dumps(f)) is f
        assert repr(f).startswith(f"<function Binding.{f.__name__} at 0x")
        assert f.__module__ == "xlocal._binding"  # Binding's room
        assert f.__qualname__ == f"Binding.{f.__name__}"
    # Pickled when Binding's room was xlocal._core, which still re-exports it.
    old = b"\x80\x04\x8c\x0cxlocal._core\x8c\x11Binding.__enter__\x93."
    assert pickle.loads(old) is Binding.__enter__
    for f in (type(x).__call__, type(x).__getattribute__):
        assert weakref.ref(f)() is f
        assert copy.copy(f) is f
        with pytest.raises((pickle.PicklingError, AttributeError), match="local"):
            pickle.dumps(f)
    mark = type(x).__call__
    mark.seen = True  # type: ignore[attr-defined]
    assert mark.seen is True  # type: ignore[attr-defined]
    assert inspect.signature(mark) == inspect.signature(inspect.unwrap(mark))


def test_a_subclass_getattr_answers_misses() -> None:
    """A subclass's __getattr__ is called for a name that is not bound, and not for
    a bound one, as Python calls it after __getattribute__ fails."""

    class Defaulting(xlocal.xlocal):
        def __getattr__(self, attr: str) -> str:
            return f"default {attr}"

    d = Defaulting("d")
    assert d.user == "default user"
    with d(user="ann"):
        assert d.user == "ann"
    assert d.anything == "default anything"


def test_a_key_error_from_a_names_eq_is_a_miss() -> None:
    """A read that compares with a bound name whose __eq__ raises KeyError misses: an
    AttributeError for the name, as the pure reader's `except KeyError` makes it."""
    raising = [False]

    class Name(str):
        def __hash__(self) -> int:
            return str.__hash__(self)

        def __eq__(self, other: object) -> bool:
            if raising[0]:
                raise KeyError(other)
            return str.__eq__(self, other)

    x = xlocal.xlocal("x")
    with x(**{Name("user"): "ann"}):
        raising[0] = True
        with pytest.raises(AttributeError, match="'user' is not bound"):
            x.user  # noqa: B018 - the read is the test
        assert not hasattr(x, "user")
        raising[0] = False
        assert x.user == "ann"


def test_a_miss_names_the_name_and_the_object() -> None:
    """The AttributeError of a miss has the name read and the xlocal as ``name`` and
    ``obj``, however the read is made: by code run often enough to be specialised
    (which, on 3.12+, calls a ``__getattribute__`` written in Python without setting
    them), by getattr, or by calling ``__getattribute__``."""
    x = xlocal.xlocal("x")
    typed = xlocal.new(_Declares, "typed")
    for target, attr in ((x, "user"), (typed, "user"), (typed, "other")):
        reads = [
            eval(f"lambda x: x.{attr}"),
            lambda x, attr=attr: getattr(x, attr),
            lambda x, attr=attr: type(x).__getattribute__(x, attr),
        ]
        for read in reads:
            for _ in range(200):
                with pytest.raises(AttributeError) as caught:
                    read(target)
                assert caught.value.name == attr  # type: ignore[attr-defined]
                assert caught.value.obj is target  # type: ignore[attr-defined]


class _Declares(xlocal.xlocal):
    user: str
