"""xlocal.local against werkzeug.local: every name it has, and the same behaviour."""

from __future__ import annotations

import copy
import importlib
import json
import pickle
import sys
import threading
import types
import typing
from collections.abc import Iterator
from contextvars import ContextVar
from functools import partial
from pathlib import Path
from typing import Any

import greenlet
import pytest
import werkzeug.local

import xlocal.local
from xlocal.local import LocalStack

#: werkzeug.local's public names per version, and Flask's imports from it, recorded by
#: tests/data/record_werkzeug.py from the released packages.
RECORDED = json.loads(
    (Path(__file__).parent / "data" / "werkzeug_local.json").read_text("utf-8")
)


def _origin(obj: Any, name: str) -> str:
    """Say where *obj* comes from, in the notation of the recorded data."""
    if isinstance(obj, types.ModuleType):
        return f"module:{obj.__name__}"
    if isinstance(obj, typing.TypeVar):
        return "TypeVar"
    if hasattr(obj, "__qualname__"):
        return f"{obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__module__}.{name}"


def _resolve(origin: str) -> Any:
    """The object a recorded origin names outside werkzeug (a module, a function)."""
    if origin.startswith("module:"):
        return importlib.import_module(origin.partition(":")[2])
    module, _, name = origin.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _check_namespace(
    names: dict[str, str],
    all_names: list[str] | None,
    objects: dict[str, Any] | None = None,
) -> None:
    """Assert that xlocal.local has each of werkzeug's *names*, of the same kind.

    *objects* are werkzeug's own objects, where at hand; else the recorded origins say
    which standard-library object each name must be.
    """
    for name in all_names or ():
        assert hasattr(xlocal.local, name), name
    for name, origin in names.items():
        ours = getattr(xlocal.local, name, None)
        assert ours is not None, f"xlocal.local has no {name!r}"
        if origin == "TypeVar":
            assert isinstance(ours, typing.TypeVar), name
        elif origin.startswith("werkzeug."):
            # werkzeug's own API: xlocal.local's counterpart, of the same kind.
            werkzeug_kind = "class" if name[:1].isupper() else "function"
            assert isinstance(ours, type) == (werkzeug_kind == "class"), name
            assert callable(ours), name
        else:
            # A standard-library object werkzeug imported: the very same object.
            expected = objects[name] if objects else _resolve(origin)
            assert ours is expected, name


@pytest.mark.parametrize("version", sorted(RECORDED["werkzeug"]))
def test_recorded_werkzeug_names(version: str) -> None:
    """Every public name of werkzeug.local 2.x and 3.x is in xlocal.local."""
    record = RECORDED["werkzeug"][version]
    assert "LocalProxy" in record["names"]
    _check_namespace(record["names"], record["__all__"])


def test_installed_werkzeug_names() -> None:
    """Every public name of the installed werkzeug.local is in xlocal.local."""
    objects = {
        name: obj
        for name, obj in vars(werkzeug.local).items()
        if not name.startswith("_")
    }
    names = {name: _origin(obj, name) for name, obj in objects.items()}
    assert {"Local", "LocalProxy", "LocalStack", "ContextVar"} <= set(names)
    _check_namespace(names, getattr(werkzeug.local, "__all__", None), objects)


def test_namespace_check_can_fail() -> None:
    """The namespace check fails for a name xlocal.local lacks or binds differently."""
    with pytest.raises(AssertionError, match="has no 'NotThere'"):
        _check_namespace({"NotThere": "werkzeug.local.NotThere"}, None)
    with pytest.raises(AssertionError, match="partial"):
        _check_namespace({"partial": "builtins.print"}, None)


@pytest.mark.parametrize("version", sorted(RECORDED["flask"]))
def test_flask_imports(version: str) -> None:
    """What Flask 2.0 and later import from werkzeug.local imports from xlocal.local."""
    names = RECORDED["flask"][version]
    namespace: dict[str, Any] = {}
    exec(f"from xlocal.local import {', '.join(names)}", namespace)
    assert set(names) <= set(namespace)
    if "ContextVar" in names:
        # Flask 2.0 refuses async views when werkzeug's ContextVar is its fallback.
        assert namespace["ContextVar"].__module__ != "werkzeug.local"


def test_flask_2_0_globals_pattern() -> None:
    """Flask 2.0's globals (a LocalStack and proxies of partials) work per thread."""
    stack: Any = xlocal.local.LocalStack()

    def lookup(name: str) -> Any:
        top = stack.top
        if top is None:
            raise RuntimeError("working outside of request context")
        return getattr(top, name)

    request: Any = xlocal.local.LocalProxy(partial(lookup, "request"))
    seen: list[Any] = []
    ready = threading.Barrier(2, timeout=10)

    def handle(path: str) -> None:
        stack.push(types.SimpleNamespace(request=types.SimpleNamespace(path=path)))
        ready.wait()
        seen.append(request.path)
        stack.pop()

    thread = threading.Thread(target=handle, args=("/thread",))
    thread.start()
    stack.push(types.SimpleNamespace(request=types.SimpleNamespace(path="/main")))
    ready.wait()
    assert request.path == "/main"
    thread.join(10)
    assert seen == ["/thread"]
    stack.pop()
    with pytest.raises(RuntimeError, match="outside of request context"):
        request.path  # noqa: B018


@pytest.fixture(params=[werkzeug.local, xlocal.local], ids=["werkzeug", "xlocal"])
def module(request: pytest.FixtureRequest) -> Any:
    """werkzeug.local, then xlocal.local: both must pass each behaviour test."""
    return request.param


class _Response:
    """A WSGI response that records what happens to it."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __iter__(self) -> Iterator[bytes]:
        yield b"a"
        yield b"b"

    def close(self) -> None:
        self.log.append("response closed")


@pytest.mark.parametrize("many", [False, True], ids=["one", "list"])
def test_closing_iterator(module: Any, many: bool) -> None:
    """ClosingIterator iterates, then closes the response before its callbacks."""
    log: list[str] = []
    first = partial(log.append, "first")
    callbacks = [first, partial(log.append, "second")] if many else first
    iterator = module.ClosingIterator(_Response(log), callbacks)
    assert iter(iterator) is iterator
    assert next(iterator) == b"a"
    assert list(iterator) == [b"b"]
    iterator.close()
    assert log == ["response closed", "first", *(["second"] if many else [])]


def test_closing_iterator_without_callbacks(module: Any) -> None:
    """ClosingIterator without callbacks closes the response only."""
    log: list[str] = []
    iterator = module.ClosingIterator(_Response(log))
    assert list(iterator) == [b"a", b"b"]
    iterator.close()
    assert log == ["response closed"]


def test_type_variables(module: Any) -> None:
    """F is bound to callables and T is free, as werkzeug's type variables are."""
    assert module.F.__bound__ is not None
    assert module.T.__bound__ is None


def test_get_ident_is_deprecated_identity() -> None:
    """get_ident() warns and returns the current greenlet, as werkzeug 2.0 did."""
    with pytest.warns(DeprecationWarning, match=r"^get_ident\(\) is deprecated: ") as w:
        ident = xlocal.local.get_ident()
    assert w[0].filename == __file__
    assert ident is greenlet.getcurrent()
    other: list[Any] = []

    def in_thread() -> None:
        with pytest.warns(DeprecationWarning, match=r"^get_ident"):
            other.append(xlocal.local.get_ident())

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(10)
    assert other[0] is not ident


@pytest.mark.parametrize("kind", ["Local", "LocalStack"])
def test_ident_func_is_deprecated_identity(kind: str) -> None:
    """werkzeug 2.0's __ident_func__ (Flask-SQLAlchemy 2.5.0's scopefunc) works."""
    store = getattr(xlocal.local, kind)()
    with pytest.warns(
        DeprecationWarning, match=r"^__ident_func__ is deprecated: "
    ) as w:
        func = store.__ident_func__
    assert w[0].filename == __file__
    assert func() is greenlet.getcurrent()


def test_setting_ident_func_is_deprecated() -> None:
    """Setting a LocalStack's __ident_func__ warns and changes nothing, as in 2.0."""
    stack: Any = LocalStack()
    with pytest.warns(
        DeprecationWarning,
        match=r"^setting __ident_func__ \(it has no effect\) is deprecated: ",
    ):
        stack.__ident_func__ = threading.get_ident
    with pytest.warns(DeprecationWarning, match=r"^__ident_func__ is deprecated"):
        assert stack.__ident_func__() is greenlet.getcurrent()


def test_local_subclass_attributes(module: Any) -> None:
    """A Local subclass's methods, properties and class attributes come before data."""

    class RequestLocal(module.Local):  # type: ignore[name-defined,misc]
        kind = "class attribute"

        def get(self, name: str, default: Any = None) -> Any:
            return getattr(self, name, default)

        @property
        def upper(self) -> str:
            return str(self.user).upper()

    local = RequestLocal()
    assert local.get("user", "nobody") == "nobody"
    local.user = "ann"
    local.kind = "data"
    assert (local.get("user"), local.upper, local.kind) == (
        "ann",
        "ANN",
        "class attribute",
    )
    assert dict(local) == {"user": "ann", "kind": "data"}
    with pytest.raises(AttributeError):
        local.missing  # noqa: B018
    module.release_local(local)
    assert dict(local) == {}


def test_proxy_subclass_attributes(module: Any) -> None:
    """A LocalProxy subclass's own methods and attributes are the proxy's own."""

    class ListProxy(module.LocalProxy):  # type: ignore[name-defined,misc]
        """A proxy with helpers."""

        tag = "mine"

        def describe(self) -> str:
            return f"proxy of {self._get_current_object()!r}"

    local = module.Local()
    local.items = [1]
    p = ListProxy(local, "items")
    assert (p.tag, p.describe(), p.__doc__) == (
        "mine",
        "proxy of [1]",
        ListProxy.__doc__,
    )
    p.append(2)
    assert p == [1, 2]
    assert isinstance(p, list)
    assert type(p) is ListProxy
    module.release_local(local)


def test_subclass_getattribute_is_kept() -> None:
    """A subclass's own __getattribute__ is kept, in its subclasses too."""

    class Shouting(xlocal.local.Local):  # type: ignore[misc]
        def __getattribute__(self, name: str) -> Any:
            return str(super().__getattribute__(name)).upper()

    class ShoutingProxy(xlocal.local.LocalProxy):  # type: ignore[misc]
        def __getattribute__(self, name: str) -> Any:
            return str(super().__getattribute__(name)).upper()

    class Child(Shouting):
        pass

    class ChildProxy(ShoutingProxy):
        pass

    for local in (Shouting(), Child()):
        local.user = "ann"
        assert local.user == "ANN"
        # The proxy's own __getattribute__ shouts the repr of the method it found.
        assert ChildProxy(partial(str, "ann")).upper == str("ann".upper).upper()
        xlocal.local.release_local(local)


# -- LocalProxy details werkzeug users meet (werkzeug's tests/test_local.py) ----------

_VAR: ContextVar[Any] = ContextVar("test_werkzeug.var")


def test_unbound_proxy_module_doc_wrapped(module: Any) -> None:
    """Unbound, __module__ and __doc__ are the proxy class's, __wrapped__ the source."""
    local, stack = module.Local(), module.LocalStack()
    for source, p in [
        (local, local("name")),
        (stack, stack()),
        (_VAR, module.LocalProxy(_VAR)),
    ]:
        assert p.__module__ == module.LocalProxy.__module__
        assert p.__doc__ == module.LocalProxy.__doc__
        assert p.__wrapped__ is source
    assert module.LocalProxy.__doc__.startswith("A proxy")


def test_bound_proxy_doc_and_wrapped(module: Any) -> None:
    """Bound, __doc__ and __wrapped__ are the object's, or AttributeError."""

    def example() -> None:
        """Example doc."""

    class Wrapper:
        __wrapped__ = "wrapped"

    local = module.Local()
    local.func, local.wrapper, local.number = example, Wrapper(), 42
    assert local("func").__doc__ == "Example doc."
    assert local("wrapper").__wrapped__ == "wrapped"
    with pytest.raises(AttributeError):
        local("number").__wrapped__  # noqa: B018
    module.release_local(local)


def test_stack_top_none_is_unbound(module: Any) -> None:
    """A proxy to a LocalStack whose top is None is unbound, as werkzeug's is."""
    stack = module.LocalStack()
    stack.push(None)
    for p in (stack(), stack("attr")):
        assert repr(p) == "<LocalProxy unbound>"
        assert not p
        with pytest.raises(RuntimeError):
            p._get_current_object()
    stack.push(1)
    assert stack() == 1
    stack.pop()
    stack.pop()


def test_stack_top_none_message() -> None:
    """The unbound message of a proxy to a None top says so and what to do."""
    stack: Any = LocalStack()
    stack.push(None)
    with pytest.raises(
        RuntimeError,
        match=r"^the top of <LocalStack at 0x\w+> is None in this execution, which a "
        r"proxy treats as empty \(as werkzeug's does\): push an object before using "
        r"the proxy$",
    ):
        stack().real  # noqa: B018
    with pytest.raises(RuntimeError, match=r"^no request$"):
        stack(unbound_message="no request").real  # noqa: B018
    stack.pop()


def test_proxy_copy_and_deepcopy(module: Any) -> None:
    """copy and deepcopy copy the object, with its own __copy__ and __deepcopy__."""

    class Same:
        def __copy__(self) -> Same:
            return self

        def __deepcopy__(self, memo: Any) -> Same:
            return self

    local = module.Local()
    local.same, local.nested = Same(), [[1]]
    assert copy.copy(local("same")) is local.same
    assert copy.deepcopy(local("same")) is local.same
    shallow, deep = copy.copy(local("nested")), copy.deepcopy(local("nested"))
    assert type(shallow) is type(deep) is list
    assert shallow == deep == [[1]]
    assert shallow[0] is local.nested[0]
    assert deep[0] is not local.nested[0]
    memo: dict[int, Any] = {}
    assert copy.deepcopy([local("nested")], memo) == [[[1]]]
    module.release_local(local)
    for operation in (copy.copy, copy.deepcopy):
        with pytest.raises(RuntimeError):
            operation(local("nested"))


def test_proxy_pickling_is_refused(module: Any) -> None:
    """Pickling a proxy fails, bound or unbound, as with werkzeug."""
    if module is not xlocal.local and sys.implementation.name != "cpython":
        pytest.skip("werkzeug's proxy pickles on PyPy; xlocal's refuses everywhere")
    local = module.Local()
    local.value = [1, 2]
    with pytest.raises((TypeError, pickle.PicklingError)):
        pickle.dumps(local("value"))
    # Unbound, werkzeug's error depends on the Python version (TypeError on 3.11,
    # its RuntimeError on 3.9); xlocal's is a TypeError (tests/test_local.py).
    with pytest.raises((TypeError, RuntimeError)):
        pickle.dumps(local("unset"))
    module.release_local(local)
