"""The werkzeug-compatible layer: Local, LocalStack, LocalProxy, LocalManager."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import gc
import importlib
import math
import operator
import pickle
import re
import threading
import weakref
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import greenlet
import pytest
from conftest import Tagged, python
from executions import MODELS, Model
from raised import every_error

from xlocal import ContextExecutor, xlocal
from xlocal.local import (
    Local,
    LocalManager,
    LocalProxy,
    LocalStack,
    proxy,
    release_local,
)

TIMEOUT = 10.0


def _stored(var: contextvars.ContextVar[Any]) -> bool:
    """Whether *var* holds any data in the current context (an emptied store holds
    the shared empty value)."""
    return bool(contextvars.copy_context().get(var))


def _local_var(local: Local) -> contextvars.ContextVar[Any]:
    var: contextvars.ContextVar[Any] = object.__getattribute__(local, "_Local__storage")
    return var


# -- Local --------------------------------------------------------------------------


def test_local_set_get_delete() -> None:
    """A Local keeps attributes set on it until they are deleted."""
    local = Local()
    local.foo = 42
    assert local.foo == 42
    local.foo = 23
    assert local.foo == 23
    del local.foo
    assert not hasattr(local, "foo")
    assert getattr(local, "foo", None) is None


def test_local_missing_attribute_message() -> None:
    """Reading a missing attribute raises AttributeError saying what to do."""
    local = Local()
    with pytest.raises(
        AttributeError,
        match=r"^'foo' is not set on <Local at 0x[0-9a-f]+> in this execution: set "
        r"it first, or read it with getattr\(local, 'foo', default\)$",
    ) as info:
        local.foo  # noqa: B018
    assert info.value.name == "foo"
    assert info.value.obj is local


def test_local_delete_missing_message() -> None:
    """Deleting a missing attribute raises AttributeError naming it, with the name
    and the object set on the error as Python's own AttributeError has them."""
    with pytest.raises(
        AttributeError,
        match=r"^cannot delete 'foo' on <Local at 0x[0-9a-f]+>: it is not set in "
        r"this execution$",
    ):
        del Local().foo
    local = Local()
    with pytest.raises(AttributeError) as info:
        del local.foo
    assert (info.value.name, info.value.obj) == ("foo", local)


def test_local_dunder_names_are_storable() -> None:
    """Names of any shape can be stored, and the Local's own dunders still work."""
    local = Local()
    local._private = 1
    local.__custom__ = 2
    assert local._private == 1
    assert local.__custom__ == 2
    assert isinstance(local.__class__, type)
    assert sorted(local) == [("__custom__", 2), ("_private", 1)]
    release_local(local)


def test_local_iterates_over_current_items() -> None:
    """Iterating over a Local gives the (name, value) pairs of this execution."""
    local = Local()
    local.a = 1
    local.b = 2
    assert sorted(local) == [("a", 1), ("b", 2)]
    assert list(contextvars.Context().run(lambda: list(local))) == []
    release_local(local)
    assert list(local) == []


def test_local_call_gives_proxy() -> None:
    """Calling a Local with a name gives a proxy to that attribute."""
    local = Local()
    value = local("value")
    assert type(value) is LocalProxy
    local.value = [1, 2]
    assert value == [1, 2]
    local.value = "other"
    assert value.upper() == "OTHER"
    release_local(local)
    with pytest.raises(RuntimeError, match=r"^'value' is not set on <Local"):
        value.upper()


def test_local_write_copies_before_setting() -> None:
    """A context copied before a write keeps the values it had."""
    local = Local()
    local.value = "before"
    snapshot = contextvars.copy_context()
    local.value = "after"
    local.other = 1
    assert snapshot.run(lambda: dict(local)) == {"value": "before"}
    snapshot.run(setattr, local, "value", "in copy")
    assert local.value == "after"
    assert snapshot.run(getattr, local, "value") == "in copy"
    release_local(local)


def test_local_with_own_context_var() -> None:
    """A Local keeps its data in the ContextVar it is given and never mutates it."""
    var: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("data")
    first = {"a": 1}
    token = var.set(first)
    local = Local(var)
    assert local.a == 1
    local.b = 2
    assert first == {"a": 1}
    assert var.get() == {"a": 1, "b": 2}
    release_local(local)
    assert var.get() == {}
    assert first == {"a": 1}
    var.reset(token)


def test_local_rejects_non_context_var() -> None:
    """Local(context_var=...) refuses what is not a ContextVar."""
    with pytest.raises(
        TypeError,
        match=r"^Local\(context_var=\.\.\.\) takes a contextvars\.ContextVar "
        r"holding a dict, not dict$",
    ):
        Local({})  # type: ignore[arg-type]


def test_empty_local_stores_nothing() -> None:
    """Deleting the last attribute or releasing leaves the variable unset."""
    local = Local()
    var = _local_var(local)
    assert not _stored(var)
    local.a = 1
    local.b = 2
    assert _stored(var)
    del local.a
    del local.b
    assert not _stored(var)
    local.c = 3
    release_local(local)
    assert not _stored(var)
    release_local(local)
    assert not _stored(var)


def test_release_in_copied_context_leaves_origin() -> None:
    """Releasing in a copy of the context empties the copy only."""
    local = Local()
    local.a = 1
    copied = contextvars.copy_context()
    copied.run(release_local, local)
    assert copied.run(list, local) == []
    assert local.a == 1
    release_local(local)
    assert not _stored(_local_var(local))


def test_local_refuses_pickling() -> None:
    """A Local cannot be pickled or copied: its data belongs to its executions."""
    with pytest.raises(TypeError, match=r"^cannot copy or pickle <Local at 0x"):
        pickle.dumps(Local())
    with pytest.raises(TypeError, match=r"^cannot copy or pickle"):
        copy.copy(Local())


# -- LocalStack ---------------------------------------------------------------------


def test_stack_push_pop_top() -> None:
    """A LocalStack pushes, pops and shows its top as werkzeug documents."""
    stack: LocalStack[int] = LocalStack()
    assert stack.top is None
    assert stack.pop() is None
    assert stack.push(42) == [42]
    assert stack.top == 42
    stack.push(23)
    assert stack.top == 23
    assert stack.pop() == 23
    assert stack.top == 42
    assert stack.pop() == 42
    assert stack.top is None


def test_empty_stack_stores_nothing() -> None:
    """Popping the last item or releasing leaves the variable unset."""
    stack: LocalStack[int] = LocalStack()
    assert not _stored(stack._storage)
    stack.push(1)
    stack.push(2)
    stack.pop()
    stack.pop()
    assert not _stored(stack._storage)
    stack.push(3)
    release_local(stack)
    assert not _stored(stack._storage)


def test_stack_push_copies_before_setting() -> None:
    """A context copied before a push keeps the stack it had."""
    stack: LocalStack[str] = LocalStack()
    stack.push("outer")
    snapshot = contextvars.copy_context()
    stack.push("inner")
    assert snapshot.run(lambda: stack.top) == "outer"
    assert snapshot.run(stack.pop) == "outer"
    assert snapshot.run(lambda: stack.top) is None
    assert stack.pop() == "inner"
    assert stack.pop() == "outer"
    assert not _stored(stack._storage)


def test_stack_push_returns_a_copy() -> None:
    """Changing the list push() returns changes neither the stack nor its snapshots."""
    stack: LocalStack[str] = LocalStack()
    returned = stack.push("a")
    snapshot = contextvars.copy_context()
    returned.append("changed")
    assert returned == ["a", "changed"]
    assert stack.top == "a"
    assert snapshot.run(lambda: stack.top) == "a"
    assert stack.pop() == "a"
    assert stack.top is None


def test_stack_refuses_copy_and_pickle() -> None:
    """A LocalStack cannot be copied or pickled, as a Local cannot."""
    stack: LocalStack[int] = LocalStack()
    for operation in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(
            TypeError,
            match=r"^cannot copy or pickle <LocalStack at 0x\w+>: its data belongs to "
            r"the executions that pushed it; share the LocalStack itself$",
        ):
            operation(stack)


def test_stack_with_own_context_var() -> None:
    """A LocalStack keeps its items in the given ContextVar, never mutating a list."""
    var: contextvars.ContextVar[list[int]] = contextvars.ContextVar("stack")
    first = [1]
    token = var.set(first)
    stack = LocalStack(var)
    stack.push(2)
    assert first == [1]
    assert var.get() == [1, 2]
    assert stack.pop() == 2
    assert stack.pop() == 1
    assert first == [1]
    assert var.get() == []
    var.reset(token)


def test_stack_rejects_non_context_var() -> None:
    """LocalStack(context_var=...) refuses what is not a ContextVar."""
    with pytest.raises(TypeError, match=r"holding a list, not list$"):
        LocalStack([])  # type: ignore[arg-type]


def test_stack_call_gives_proxy_to_top() -> None:
    """Calling a LocalStack gives a proxy to its top, or to an attribute of it."""
    stack: LocalStack[Any] = LocalStack()
    top = stack()
    real = stack("real")
    with pytest.raises(
        RuntimeError,
        match=r"^<LocalStack at 0x[0-9a-f]+> is empty in this execution: push an "
        r"object before using the proxy$",
    ):
        top._get_current_object()
    stack.push(3 + 4j)
    assert top == 3 + 4j
    assert real == 3.0
    stack.push(1j)
    assert real == 0.0
    stack.pop()
    stack.pop()
    assert not top
    assert repr(real) == "<LocalProxy unbound>"


# -- LocalProxy: sources -------------------------------------------------------------


def test_proxy_to_context_var() -> None:
    """A proxy to a ContextVar resolves to its value, or an attribute of it."""
    var: contextvars.ContextVar[complex] = contextvars.ContextVar("number")
    number = LocalProxy(var)
    imag = LocalProxy(var, "imag")
    with pytest.raises(
        RuntimeError,
        match=r"^ContextVar 'number' has no value in this execution: set it before "
        r"using the proxy$",
    ):
        number + 1
    token = var.set(2 + 5j)
    assert number == 2 + 5j
    assert imag == 5.0
    var.reset(token)


def test_proxy_to_callable() -> None:
    """A proxy to a callable resolves to what it returns, at each use."""
    values = ["first"]
    last = LocalProxy(lambda: values[-1])
    length = LocalProxy(lambda: values[-1], "__len__")
    assert last == "first"
    values.append("second!")
    assert last == "second!"
    assert length() == 7


def test_proxy_to_local_needs_name() -> None:
    """A proxy to a Local must name the attribute it proxies."""
    with pytest.raises(
        TypeError, match=r"needs the attribute name to proxy, as in `local\('user'\)`$"
    ):
        LocalProxy(Local())


def test_proxy_to_local_with_dotted_name() -> None:
    """A dotted name proxies an attribute of the Local's attribute."""
    local = Local()
    imag = LocalProxy(local, "number.imag")
    local.number = 1 + 2j
    assert imag == 2.0
    release_local(local)


@pytest.mark.parametrize("name", ["request.", "request..path", ".request", ""])
def test_dotted_name_needs_every_part(xcurrent: xlocal, name: str) -> None:
    """A dotted name with an empty part is refused when the proxy is made."""
    local = Local()
    for make in (lambda: proxy(xcurrent, name), lambda: local(name)):
        with pytest.raises(
            ValueError,
            match=rf"^cannot proxy {re.escape(repr(name))}: a dotted name needs a name "
            r"before, between and after its dots, as in 'request\.path'$",
        ):
            make()


def test_proxy_rejects_unknown_source() -> None:
    """LocalProxy refuses sources it does not know how to resolve."""
    with pytest.raises(
        TypeError,
        match=r"^cannot proxy a int object: LocalProxy takes a Local, LocalStack, "
        r"ContextVar, xlocal or a callable$",
    ):
        LocalProxy(42)  # type: ignore[arg-type]


def test_custom_unbound_message() -> None:
    """The unbound_message is the RuntimeError's message, for every source."""
    local = Local()
    stack: LocalStack[Any] = LocalStack()
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("v")
    x = xlocal("x")
    for unbound in (
        local("user", unbound_message="no user here"),
        stack(unbound_message="no user here"),
        LocalProxy(var, unbound_message="no user here"),
        LocalProxy(x, "user", unbound_message="no user here"),
        proxy(x, "user", unbound_message="no user here"),
    ):
        with pytest.raises(RuntimeError, match=r"^no user here$"):
            unbound.name  # noqa: B018


# -- LocalProxy: proxies to xlocal names --------------------------------------------


def test_proxy_to_xlocal_name_resolves_at_each_use(xcurrent: xlocal) -> None:
    """A proxy to an xlocal name follows the innermost binding of that name."""
    request = LocalProxy(xcurrent, "request")
    assert not request
    with xcurrent(request="outer"):
        assert request == "outer"
        with xcurrent(request="inner"):
            assert request.upper() == "INNER"
        assert request == "outer"
    assert repr(request) == "<LocalProxy unbound>"


def test_proxy_helper_keeps_names_bindable(xcurrent: xlocal) -> None:
    """After proxy(), the proxied name and any other name can still be bound."""
    request = proxy(xcurrent, "request")
    with xcurrent(request=1, proxy=2, local=3, name="n") as x:
        assert request == 1
        assert x.proxy == 2
        assert x.local == 3
    assert dir(xcurrent) == []


def test_proxy_to_xlocal_unbound_message(xcurrent: xlocal) -> None:
    """An unbound proxy to an xlocal name says how to bind it."""
    request = proxy(xcurrent, "request")
    with pytest.raises(
        RuntimeError,
        match=r"^'request' is not bound on <xlocal 'xcurrent'> in this execution: use "
        r"the proxy inside `with xcurrent\(request=\.\.\.\)`$",
    ):
        request.method  # noqa: B018


def test_proxy_to_xlocal_needs_bindable_name(xcurrent: xlocal) -> None:
    """A proxy to an xlocal needs a name that can be bound."""
    with pytest.raises(
        TypeError,
        match=r"^a proxy to <xlocal 'xcurrent'> needs the name to proxy, as in "
        r"`LocalProxy\(xcurrent, 'request'\)`$",
    ):
        LocalProxy(xcurrent)
    with pytest.raises(
        ValueError,
        match=r"^cannot proxy '_var' on <xlocal 'xcurrent'>: only names that can be "
        r"bound can be proxied, and names starting with '_' are reserved for the "
        r"xlocal itself$",
    ):
        proxy(xcurrent, "_var")


_IDENTIFIERS = "names must be Python identifiers"
_RESERVED = "names starting with '_' are reserved for the xlocal itself"


@pytest.mark.parametrize(
    ("name", "head", "why"),
    [
        ("1a", "1a", _IDENTIFIERS),
        ("a b", "a b", _IDENTIFIERS),
        ("a-b.path", "a-b", _IDENTIFIERS),
        ("_x.y", "_x", _RESERVED),
        (
            "if.x",
            "if",
            "it is a Python keyword, so `xcurrent.if` cannot be written; choose "
            "another name",
        ),
    ],
)
def test_proxy_to_xlocal_refuses_names_that_cannot_be_bound(
    xcurrent: xlocal, name: str, head: str, why: str
) -> None:
    """A proxy to an xlocal name that could never be bound (not an identifier, a
    keyword, starting with '_') is refused when it is made, naming the first part of
    a dotted name and saying why."""
    with pytest.raises(
        ValueError,
        match=rf"^cannot proxy {re.escape(repr(head))} on <xlocal 'xcurrent'>: only "
        rf"names that can be bound can be proxied, and {re.escape(why)}$",
    ):
        proxy(xcurrent, name)


def test_proxy_to_xlocal_dotted_name(xcurrent: xlocal) -> None:
    """A dotted name proxies an attribute of the bound value."""
    real = proxy(xcurrent, "number.real")
    with xcurrent(number=4 + 1j):
        assert real == 4.0


def test_proxy_helper_rejects_other_sources() -> None:
    """proxy() takes an xlocal; other sources go to LocalProxy."""
    with pytest.raises(
        TypeError, match=r"^proxy\(\) takes an xlocal and a name, not Local; for other"
    ):
        proxy(Local(), "x")  # type: ignore[arg-type]


# -- LocalProxy: the operator surface ------------------------------------------------


class _Box:
    """A plain object to proxy."""

    def __init__(self, value: int) -> None:
        self.value = value


@pytest.fixture
def bound(xcurrent: xlocal) -> Callable[[Any], Any]:
    """Bind a value on xcurrent for the test and return a proxy to it."""
    stack: list[Any] = []

    def bind(value: Any) -> Any:
        name = f"value{len(stack)}"
        binding = xcurrent(**{name: value})
        binding.__enter__()
        stack.append(binding)
        return proxy(xcurrent, name)

    yield bind
    while stack:
        stack.pop().__exit__(None, None, None)


_BINARY = [
    operator.lt,
    operator.le,
    operator.eq,
    operator.ne,
    operator.gt,
    operator.ge,
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.floordiv,
    operator.mod,
    divmod,
    pow,
    operator.lshift,
    operator.rshift,
    operator.and_,
    operator.xor,
    operator.or_,
]


@pytest.mark.parametrize("op", _BINARY, ids=lambda op: op.__name__)
def test_binary_operators(op: Callable[[Any, Any], Any], bound: Any) -> None:
    """Binary operators and comparisons are forwarded, proxy on the left or right."""
    p = bound(12)
    assert op(p, 5) == op(12, 5)
    assert op(29, p) == op(29, 12)


def test_matmul_operators(bound: Any) -> None:
    """Matrix multiplication is forwarded both ways."""

    class Matrix:
        def __matmul__(self, other: Any) -> str:
            return "left"

        def __rmatmul__(self, other: Any) -> str:
            return "right"

    p = bound(Matrix())
    assert p @ 1 == "left"
    assert 1 @ p == "right"


_UNARY = [
    operator.neg,
    operator.pos,
    abs,
    operator.invert,
    round,
    math.trunc,
    math.floor,
    math.ceil,
    int,
    float,
    complex,
    operator.index,
    hash,
    bool,
    str,
    repr,
]


@pytest.mark.parametrize("op", _UNARY, ids=lambda op: op.__name__)
def test_unary_operations(op: Callable[[Any], Any], bound: Any) -> None:
    """Unary operators and conversions are forwarded."""
    assert op(bound(-7)) == op(-7)


_IN_PLACE = [
    (operator.iadd, [1], [2]),
    (operator.imul, [1], 2),
    (operator.ior, {1}, {2}),
    (operator.iand, {1, 2}, {2}),
    (operator.isub, {1, 2}, {2}),
    (operator.ixor, {1, 2}, {2, 3}),
]


@pytest.mark.parametrize(("op", "value", "other"), _IN_PLACE)
def test_in_place_on_mutable_keeps_proxy(
    op: Callable[[Any, Any], Any], value: Any, other: Any, bound: Any
) -> None:
    """An in-place operator on a mutable object changes it and keeps the proxy."""
    expected = op(copy.copy(value), other)
    p = bound(value)
    result = op(p, other)
    assert result is p
    assert value == expected


_IN_PLACE_IMMUTABLE = [
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.ilshift,
    operator.irshift,
    operator.iand,
    operator.ixor,
    operator.ior,
]


@pytest.mark.parametrize("op", _IN_PLACE_IMMUTABLE, ids=lambda op: op.__name__)
def test_in_place_on_immutable_rebinds(
    op: Callable[[Any, Any], Any], bound: Any
) -> None:
    """An in-place operator on an immutable object rebinds the name to the result."""
    p = bound(12)
    result = op(p, 3)
    assert type(result) is not LocalProxy
    assert result == op(12, 3)
    assert p == 12


_IN_PLACE_METHODS = [
    "__iadd__",
    "__isub__",
    "__imul__",
    "__imatmul__",
    "__itruediv__",
    "__ifloordiv__",
    "__imod__",
    "__ipow__",
    "__ilshift__",
    "__irshift__",
    "__iand__",
    "__ixor__",
    "__ior__",
]


class _InPlaceRecorder:
    """An object with only in-place operators, each recording its call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []


def _recording(method: str) -> Callable[[_InPlaceRecorder, Any], _InPlaceRecorder]:
    def record(self: _InPlaceRecorder, other: Any) -> _InPlaceRecorder:
        self.calls.append((method, other))
        return self

    return record


for _method in _IN_PLACE_METHODS:
    setattr(_InPlaceRecorder, _method, _recording(_method))


@pytest.mark.parametrize("method", _IN_PLACE_METHODS)
def test_in_place_calls_the_objects_own_method(method: str, bound: Any) -> None:
    """Each in-place operator on a proxy calls the object's own in-place method, once,
    and keeps the proxy when that method returns the object."""
    target = _InPlaceRecorder()
    p = bound(target)
    op = getattr(operator, method.strip("_"))
    assert op(p, 5) is p
    assert target.calls == [(method, 5)]


class _Conversions:
    """An object whose conversions and protocols each answer in their own way, so
    that a proxy falling back to another protocol shows."""

    def __bytes__(self) -> bytes:
        return b"own bytes"

    def __ne__(self, other: object) -> Any:
        return "own ne"

    def __length_hint__(self) -> int:
        return 7

    def __contains__(self, item: object) -> bool:
        return item == "inside"

    def __complex__(self) -> complex:
        return 1 + 2j

    def __int__(self) -> int:
        return 41

    def __float__(self) -> float:
        return 4.5

    def __floor__(self) -> int:
        return -3

    def __ceil__(self) -> int:
        return 9

    async def __anext__(self) -> str:
        return "next item"


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (bytes, b"own bytes"),
        (lambda p: p != 1, "own ne"),
        (operator.length_hint, 7),
        (lambda p: ("inside" in p, "outside" in p), (True, False)),
        (complex, 1 + 2j),
        (int, 41),
        (float, 4.5),
        (math.floor, -3),
        (math.ceil, 9),
        # what anext() does (3.10+): look __anext__ up on the type
        (lambda p: asyncio.run(type(p).__anext__(p)), "next item"),
    ],
    ids=[
        "bytes",
        "ne",
        "length_hint",
        "contains",
        "complex",
        "int",
        "float",
        "floor",
        "ceil",
        "anext",
    ],
)
def test_protocols_reach_the_objects_own_methods(
    operation: Callable[[Any], Any], expected: Any, bound: Any
) -> None:
    """Conversions and protocols on a proxy call the object's own special method,
    not a fallback Python would use for a class without it."""
    assert operation(bound(_Conversions())) == expected


def test_in_place_matmul(bound: Any) -> None:
    """In-place matrix multiplication is forwarded too."""

    class Matrix:
        def __imatmul__(self, other: Any) -> Matrix:
            return self

    p = bound(Matrix())
    p @= 1
    assert type(p) is LocalProxy


def test_in_place_rebinds_name(bound: Any) -> None:
    """``p += 1`` rebinds p like ``p = p + 1``; ``p += [x]`` keeps the proxy."""
    number = bound(1)
    number += 1
    assert number == 2
    assert type(number) is int
    items = bound([])
    items += [1]
    assert type(items) is LocalProxy
    assert items == [1]


def test_attributes_are_forwarded(bound: Any) -> None:
    """Getting, setting and deleting attributes reach the object."""
    box = _Box(1)
    p = bound(box)
    assert p.value == 1
    p.value = 2
    assert box.value == 2
    p.other = 3
    del p.value
    assert vars(box) == {"other": 3}
    with pytest.raises(AttributeError):
        p.value  # noqa: B018
    assert "other" in dir(p)


def test_items_and_containers(bound: Any) -> None:
    """Item access, len, iteration, reversed, membership and hints are forwarded."""
    data = {"a": 1}
    p = bound(data)
    assert p["a"] == 1
    p["b"] = 2
    del p["a"]
    assert data == {"b": 2}
    assert len(p) == 1
    assert list(p) == ["b"]
    assert "b" in p
    assert list(reversed(p)) == ["b"]
    assert operator.length_hint(p) == 1


def test_next_is_forwarded(bound: Any) -> None:
    """next() on a proxy to an iterator advances the iterator."""
    p = bound(iter([1, 2]))
    assert next(p) == 1
    assert list(p) == [2]


def test_call_is_forwarded(bound: Any) -> None:
    """Calling a proxy calls the object, also when the object is a class."""
    assert bound(lambda *a, **k: (a, k))(1, b=2) == ((1,), {"b": 2})
    made = bound(_Box)(5)
    assert isinstance(made, _Box)
    assert made.value == 5


def test_class_and_isinstance(bound: Any) -> None:
    """``__class__`` is forwarded, so isinstance sees the object's class."""
    p = bound(_Box(1))
    assert isinstance(p, _Box)
    assert isinstance(p, LocalProxy)
    assert p.__class__ is _Box
    assert type(p) is LocalProxy
    cls = bound(_Box)
    assert isinstance(_Box(2), cls)
    assert issubclass(_Box, cls)


def test_format_bytes_copy(bound: Any) -> None:
    """format, bytes, copy and deepcopy are forwarded."""
    assert f"{bound(3.14159):.2f}" == "3.14"
    assert bytes(bound(b"ab")) == b"ab"
    data = [[1]]
    p = bound(data)
    shallow = copy.copy(p)
    deep = copy.deepcopy(p)
    assert type(shallow) is list
    assert shallow[0] is data[0]
    assert deep == data
    assert deep[0] is not data[0]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_is_refused(bound: Any, protocol: int) -> None:
    """Pickling a proxy, bound or not, is refused with what to pickle instead."""
    local = Local()
    for p in (bound([1, 2]), local("unset")):
        with pytest.raises(
            TypeError,
            match=r"^cannot pickle a LocalProxy \(of .+\): it stands for an object of "
            r"the execution that uses it; pickle proxy\._get_current_object\(\) to "
            r"pickle that object$",
        ):
            pickle.dumps(p, protocol)
    assert pickle.loads(pickle.dumps(bound([1, 2])._get_current_object())) == [1, 2]
    with pytest.raises(TypeError, match=r"^cannot pickle a LocalProxy"):
        bound([1]).__reduce__()


def test_with_is_forwarded(bound: Any) -> None:
    """A proxy to a context manager can be used in a with-statement."""
    seen: list[str] = []

    class Manager:
        def __enter__(self) -> str:
            seen.append("enter")
            return "entered"

        def __exit__(self, *exc: object) -> None:
            seen.append("exit")

    with bound(Manager()) as value:
        assert value == "entered"
    assert seen == ["enter", "exit"]


def test_await_and_async_protocols(bound: Any) -> None:
    """await, async with and async for work through a proxy."""

    class Resource:
        async def __aenter__(self) -> str:
            return "entered"

        async def __aexit__(self, *exc: object) -> None:
            return None

        def __aiter__(self) -> Resource:
            self.left = 2
            return self

        async def __anext__(self) -> int:
            if not self.left:
                raise StopAsyncIteration
            self.left -= 1
            return self.left

    async def answer() -> int:
        return 42

    coroutine = bound(answer())
    resource = bound(Resource())

    async def main() -> list[Any]:
        results: list[Any] = [await coroutine]
        async with resource as entered:
            results.append(entered)
        results.extend([item async for item in resource])
        return results

    assert asyncio.run(main()) == [42, "entered", 1, 0]


def test_get_current_object(bound: Any) -> None:
    """_get_current_object() returns the object itself."""
    box = _Box(1)
    assert bound(box)._get_current_object() is box


def test_wrapped_and_doc(bound: Any) -> None:
    """__doc__ and __wrapped__ give the object's, or the proxy's when unbound."""
    x = xlocal("x")
    unbound = proxy(x, "value")
    assert unbound.__wrapped__ is x
    assert unbound.__doc__ == LocalProxy.__doc__
    assert LocalProxy.__doc__.startswith("A proxy that forwards")
    assert bound(_Box(1)).__doc__ == "A plain object to proxy."


_UNBOUND_OPERATIONS: list[Callable[[Any], Any]] = [
    str,
    len,
    hash,
    iter,
    next,
    int,
    copy.copy,
    lambda p: p == 1,
    lambda p: p != 1,
    lambda p: p < 1,
    lambda p: p + 1,
    lambda p: 1 + p,
    lambda p: -p,
    lambda p: p(),
    lambda p: p[0],
    lambda p: 0 in p,
    lambda p: p.attr,
    lambda p: hasattr(p, "attr"),
    lambda p: setattr(p, "attr", 1),
    lambda p: p.__enter__(),
]


def test_unbound_proxy_fallbacks(xcurrent: xlocal) -> None:
    """An unbound proxy has a repr saying so, is false, has no dir and its own class."""
    p = proxy(xcurrent, "value")
    assert repr(p) == "<LocalProxy unbound>"
    assert bool(p) is False
    assert dir(p) == []
    assert p.__class__ is LocalProxy
    for operation in _UNBOUND_OPERATIONS:
        with pytest.raises(RuntimeError, match=r"^'value' is not bound"):
            operation(p)
    with pytest.raises(RuntimeError, match=r"^'value' is not bound"):
        p += 1


# -- LocalManager and release_local ---------------------------------------------------


def test_manager_cleanup_releases_all() -> None:
    """cleanup() releases every managed Local and LocalStack, also ones added later."""
    local = Local()
    stack: LocalStack[int] = LocalStack()
    later = Local()
    manager = LocalManager([local, stack])
    manager.locals.append(later)
    local.a = stack.push(1)
    later.b = 2
    manager.cleanup()
    assert list(local) == []
    assert stack.top is None
    assert list(later) == []
    assert repr(manager) == "<LocalManager storages: 3>"


def test_manager_takes_single_local_or_none() -> None:
    """LocalManager accepts one Local, one LocalStack, or nothing."""
    local = Local()
    stack: LocalStack[int] = LocalStack()
    assert LocalManager(local).locals == [local]
    assert LocalManager(stack).locals == [stack]
    assert LocalManager().locals == []


def test_manager_checks_its_locals() -> None:
    """LocalManager refuses what is not a store at once, naming the argument."""
    with pytest.raises(
        TypeError,
        match=r"^LocalManager\(locals=\.\.\.\) takes Local, LocalStack and "
        r"LocalManager objects, not int$",
    ):
        LocalManager([Local(), 3])  # type: ignore[list-item]
    with pytest.raises(
        TypeError,
        match=r"^LocalManager\(locals=\.\.\.\) takes Local, LocalStack and "
        r"LocalManager objects, not LocalProxy: give the Local or LocalStack it "
        r"proxies$",
    ):
        LocalManager([Local()("user")])  # type: ignore[list-item]
    with pytest.raises(
        TypeError,
        match=r"^LocalManager\(locals=\.\.\.\) takes a Local, LocalStack or "
        r"LocalManager, or a list of them, not int$",
    ):
        LocalManager(3)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^make_middleware\(\) takes the WSGI application to wrap, a callable, "
        r"not str$",
    ):
        LocalManager().make_middleware("app")  # type: ignore[arg-type]


def test_manager_releases_managers_and_all_despite_errors() -> None:
    """A manager releases nested managers, and every store even if one fails."""
    first, second = Local(), Local()

    class Failing:
        def __release_local__(self) -> None:
            raise OSError("release failed")

    manager = LocalManager([first, Failing(), LocalManager(second)])  # type: ignore[list-item]
    first.value = second.value = 1
    with pytest.raises(OSError, match=r"^release failed$"):
        manager.cleanup()
    assert list(first) == list(second) == []
    second.value = 2
    release_local(LocalManager([second]))
    assert list(second) == []


class _FailingStore:
    """A store whose release fails with an error naming it, once armed."""

    def __init__(self, name: str, armed: bool = True) -> None:
        self.name = name
        self.armed = armed
        self.released = 0

    def __release_local__(self) -> None:
        self.released += 1
        if self.armed:
            raise OSError(f"{self.name} failed")


def test_manager_raises_every_release_error() -> None:
    """When several stores fail to release, every one is tried and every error is
    raised together: by cleanup(), release_local() and the WSGI middleware, where an
    error of the app comes first."""
    stores = [_FailingStore("first"), _FailingStore("second")]
    manager = LocalManager(stores)  # type: ignore[arg-type]
    both = ["OSError: first failed", "OSError: second failed"]
    with pytest.raises(BaseException) as raised:
        manager.cleanup()
    assert every_error(raised.value) == both
    with pytest.raises(BaseException) as raised:
        release_local(manager)
    assert every_error(raised.value) == both
    response = manager.make_middleware(lambda environ, start: [b"ok"])({}, print)
    with pytest.raises(BaseException) as raised:
        response.close()  # type: ignore[attr-defined]
    assert every_error(raised.value) == both
    assert [store.released for store in stores] == [3, 3]

    def failing_app(environ: Any, start_response: Any) -> list[bytes]:
        raise LookupError("app failed")

    with pytest.raises(BaseException) as raised:
        manager.make_middleware(failing_app)({}, print)
    assert every_error(raised.value) == ["LookupError: app failed", *both]
    assert [store.released for store in stores] == [4, 4]
    for store in stores:
        store.armed = False
    with pytest.raises(LookupError, match=r"^app failed$"):
        manager.make_middleware(failing_app)({}, print)


def _wsgi_app(local: Local) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """The app's docstring."""
        local.request = environ["id"]
        start_response("200 OK", [])
        return [b"ok"]

    return app


def test_manager_middleware_releases_after_close() -> None:
    """make_middleware releases the locals once the response is closed."""
    local = Local()
    app = LocalManager([local]).make_middleware(_wsgi_app(local))
    response = app({"id": 1}, lambda *a: None)
    assert local.request == 1
    assert list(response) == [b"ok"]
    assert local.request == 1
    response.close()  # type: ignore[attr-defined]
    assert list(local) == []


def test_manager_middleware_releases_when_app_raises() -> None:
    """make_middleware releases the locals if the app raises."""
    local = Local()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        local.request = 1
        raise KeyError("boom")

    with pytest.raises(KeyError):
        LocalManager(local).make_middleware(app)({}, lambda *a: None)
    assert list(local) == []


def test_manager_middleware_decorator_keeps_metadata() -> None:
    """middleware() works as a decorator and keeps the function's metadata."""
    local = Local()
    inner = _wsgi_app(local)
    app = LocalManager([local]).middleware(inner)
    assert app.__name__ == "app"
    assert app.__doc__ == "The app's docstring."
    assert app.__wrapped__ is inner  # type: ignore[attr-defined]
    response = app({"id": 2}, lambda *a: None)
    response.close()  # type: ignore[attr-defined]
    assert list(local) == []


def test_manager_ident_func_is_deprecated() -> None:
    """werkzeug 0.x's ident_func is accepted, ignored and warned about once."""
    with pytest.warns(
        DeprecationWarning,
        match=r"^LocalManager\(ident_func=\.\.\.\) is deprecated: it is ignored, as "
        r"xlocal\.local keeps its data in contextvars, which isolate threads, "
        r"greenlets and asyncio tasks by themselves; remove the argument$",
    ) as record:
        LocalManager([], ident_func=threading.get_ident)
    assert len(record) == 1
    assert record[0].filename == __file__
    with pytest.warns(DeprecationWarning, match=r"^LocalManager\(ident_func"):
        LocalManager(None, threading.get_ident)


def test_manager_get_ident() -> None:
    """get_ident() is stable in one execution and differs between executions."""
    manager = LocalManager()
    here = manager.get_ident()
    assert manager.get_ident() == here
    hash(here)
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(manager.get_ident()))
    thread.start()
    thread.join(TIMEOUT)
    assert seen[0] != here

    async def main() -> tuple[Any, Any]:
        async def ident() -> Any:
            return manager.get_ident()

        return await asyncio.gather(ident(), ident())  # type: ignore[return-value]

    first, second = asyncio.run(main())
    assert first != second
    assert first[0] == here[0]
    glets = [greenlet.greenlet(manager.get_ident) for _ in range(2)]
    idents = [glet.switch() for glet in glets]
    assert len({here, *idents}) == 3


@pytest.mark.parametrize("base", [Local, LocalProxy], ids=lambda base: base.__name__)
def test_subclass_passes_class_keywords_on(base: type[Any]) -> None:
    """Class keywords of a Local or LocalProxy subclass reach the other bases'
    __init_subclass__, and unknown ones are refused as for any class."""

    class Mine(base, Tagged, tag="mine"):  # type: ignore[misc, valid-type]
        pass

    assert Mine.tag == "mine"
    with pytest.raises(TypeError, match="keyword argument"):  # worded per interpreter

        class Odd(base, colour="red"):  # type: ignore[misc, valid-type, call-arg]
            pass


def test_proxy_subclass_of_a_subclass() -> None:
    """What every level of LocalProxy subclasses defines is the proxy's own; the rest
    is forwarded, even names every object has."""

    class Named(LocalProxy):  # type: ignore[type-arg]
        def name(self) -> str:
            return "named"

    class Labelled(Named):
        label = "labelled"

        def describe(self) -> str:
            return f"{self.name()}, {self.label}"

    items = list(range(100))
    p = Labelled(lambda: items)
    assert p.describe() == "named, labelled"
    assert p.count(7) == 1
    if hasattr(items, "__sizeof__"):  # CPython's objects have it, PyPy's do not
        assert p.__sizeof__() == items.__sizeof__()
    else:
        assert not hasattr(p, "__sizeof__")


def test_reflected_operators_redo_the_operation() -> None:
    """A reflected operator redoes the operation with the object on the right, so it
    works for types that have no reflected method (str, list)."""
    assert "a" + LocalProxy(lambda: "b") == "ab"
    assert [0] + LocalProxy(lambda: [1]) == [0, 1]  # noqa: RUF005 - the operator
    assert 10 - LocalProxy(lambda: 3) == 7


def test_forwarded_methods_on_the_class() -> None:
    """On the class, a forwarded method or attribute is the descriptor that forwards
    it, which names it; __doc__ is the class's docstring."""
    for name in ("__add__", "__radd__", "__iadd__", "__repr__", "__wrapped__"):
        assert repr(getattr(LocalProxy, name)) == f"<forwarded {name}>"
    assert LocalProxy.__doc__ is not None
    assert LocalProxy.__doc__.startswith("A proxy")


def test_every_name_without_double_underscore_is_data() -> None:
    """A Local keeps its own state out of the user's names: even the name of its
    private slot is data, unset until set."""
    local = Local()
    with pytest.raises(AttributeError):
        local._Local__storage  # noqa: B018
    local._Local__storage = "mine"
    local.other = 1
    assert (local._Local__storage, local.other) == ("mine", 1)
    assert dict(local) == {"_Local__storage": "mine", "other": 1}


def test_manager_get_ident_parts() -> None:
    """get_ident() is (thread id, greenlet id, task id), the task's only in a task."""
    manager = LocalManager()
    here = (threading.get_ident(), id(greenlet.getcurrent()))
    assert manager.get_ident() == here

    async def main() -> tuple[Any, Any]:
        return manager.get_ident(), asyncio.current_task()

    ident, task = asyncio.run(main())
    assert ident == (*here, id(task))


def test_identity_without_greenlet_or_asyncio() -> None:
    """Where greenlet cannot be imported and asyncio never was, get_ident() is the
    thread's id alone, and the deprecated module-level get_ident() is the thread's id
    (as werkzeug 2.0's was without greenlet)."""
    result = python(
        "import sys, threading, warnings\n"
        "sys.modules['greenlet'] = None\n"
        "import xlocal.local\n"
        "assert 'asyncio' not in sys.modules\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "print(xlocal.local.LocalManager().get_ident() == (threading.get_ident(),))\n"
        "print(xlocal.local.get_ident() == threading.get_ident())\n"
    )
    assert (result.stdout, result.stderr) == ("True\nTrue\n", "")


def test_release_local_rejects_proxy() -> None:
    """release_local() refuses a proxy: release the store it proxies."""
    with pytest.raises(
        TypeError,
        match=r"^cannot release LocalProxy objects: release_local\(\) takes a "
        r"Local, LocalStack or LocalManager \(for a proxy, release the store it "
        r"proxies\)$",
    ):
        release_local(Local()("x"))  # type: ignore[arg-type]


def test_public_names() -> None:
    """xlocal.local and xlocal.proxy export their API, each name under its own path."""
    local = importlib.import_module("xlocal.local")
    proxy_module = importlib.import_module("xlocal.proxy")
    assert sorted(local.__all__) == [
        "Local",
        "LocalManager",
        "LocalProxy",
        "LocalStack",
        "proxy",
        "release_local",
    ]
    assert sorted(proxy_module.__all__) == ["LocalProxy", "proxy"]
    for name in proxy_module.__all__:
        assert getattr(local, name) is getattr(proxy_module, name)
        assert getattr(proxy_module, name).__module__ == "xlocal.proxy"
    for name in set(local.__all__) - set(proxy_module.__all__):
        assert getattr(local, name).__module__ == "xlocal.local"


# -- Isolation under every execution model --------------------------------------------

#: A scenario is a generator function taking (index, local, stack, x): each ``yield``
#: is a point where every worker waits for all the others before going on.
Scenario = Callable[[int, Any, Any, xlocal], Generator[None, None, None]]


def _scenario(i: int, local: Any, stack: Any, x: xlocal) -> Generator[None, None, None]:
    """Each worker stores its own index everywhere, interleaved with the others."""
    local.value = i
    stack.push(i)
    yield
    value = local("value")
    top = stack()
    with x(request=i):
        request = proxy(x, "request")
        yield
        assert (local.value, stack.top, x.request) == (i, i, i)
        assert (value, top, request) == (i, i, i)
        yield
    assert not hasattr(x, "request")
    assert (local.value, stack.top) == (i, i)
    release_local(local)
    stack.pop()
    yield
    assert list(local) == []
    assert stack.top is None


class _Shared:
    """A deliberately broken 'local': one namespace shared by every execution."""

    def __iter__(self) -> Any:
        return iter(vars(self).items())

    def __call__(self, name: str) -> Any:
        return LocalProxy(lambda: getattr(self, name))

    def __release_local__(self) -> None:
        vars(self).clear()


@pytest.fixture(params=MODELS, ids=lambda m: m.name)
def model(request: pytest.FixtureRequest) -> Model:
    """Each execution model in turn."""
    return request.param  # type: ignore[no-any-return]


def test_isolation(model: Model, xcurrent: xlocal) -> None:
    """Locals, stacks, proxies and xlocal bindings are per-execution in every model."""
    local = Local()
    stack: LocalStack[int] = LocalStack()
    model.run(lambda x, i: _scenario(i, local, stack, x), xcurrent, n=4)
    assert list(local) == []
    assert not _stored(_local_var(local))


def test_isolation_check_detects_sharing(model: Model, xcurrent: xlocal) -> None:
    """The isolation scenario fails when the storage is shared between executions."""
    shared = _Shared()
    stack: LocalStack[int] = LocalStack()
    with pytest.raises(AssertionError):
        model.run(lambda x, i: _scenario(i, shared, stack, x), xcurrent, n=4)


# -- Reused pool threads ---------------------------------------------------------------


@pytest.mark.parametrize("way", ["plain", "ContextExecutor", "cleanup"])
def test_reused_pool_thread(way: str) -> None:
    """A pool thread keeps Local data for its next task unless released or carried."""
    local = Local()
    manager = LocalManager([local])
    threads: set[int] = set()

    def task(user: str) -> str:
        threads.add(threading.get_ident())
        before: str = getattr(local, "user", "none")
        local.user = user
        if way == "cleanup":
            manager.cleanup()
        return before

    pool: Any = ThreadPoolExecutor(max_workers=1)
    if way == "ContextExecutor":
        pool = ContextExecutor(pool)
    with pool:
        first = pool.submit(task, "ann").result(timeout=10)
        second = pool.submit(task, "bob").result(timeout=10)
    assert len(threads) == 1
    assert first == "none"
    assert second == ("ann" if way == "plain" else "none")


@pytest.mark.cpython_only(
    "values are freed by reference counting, not later by the collector"
)
def test_data_of_a_dead_thread_is_released_at_once() -> None:
    """What a thread stored in a Local or a LocalStack is released when the thread
    ends, without the garbage collector, as with werkzeug."""

    class Value:
        pass

    local, stack = Local(), LocalStack[Value]()
    refs = []

    def run(value: Value) -> None:
        local.value = value
        stack.push(value)

    gc.disable()
    try:
        value = Value()
        refs.append(weakref.ref(value))
        t = threading.Thread(target=run, args=(value,))
        del value
        t.start()
        t.join(60)
        del t
        assert refs[0]() is None
    finally:
        gc.enable()
