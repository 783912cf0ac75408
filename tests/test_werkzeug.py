"""xlocal.local against werkzeug.local: every name it has, and the same behaviour."""

from __future__ import annotations

import importlib
import json
import threading
import types
import typing
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import greenlet
import pytest
import werkzeug.local

import xlocal.local

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


def _check_namespace(names: dict[str, str], all_names: list[str] | None) -> None:
    """Assert that xlocal.local has each of werkzeug's *names*, of the same kind."""
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
            assert ours is _resolve(origin), name


@pytest.mark.parametrize("version", sorted(RECORDED["werkzeug"]))
def test_recorded_werkzeug_names(version: str) -> None:
    """Every public name of werkzeug.local 2.x and 3.x is in xlocal.local."""
    record = RECORDED["werkzeug"][version]
    assert "LocalProxy" in record["names"]
    _check_namespace(record["names"], record["__all__"])


def test_installed_werkzeug_names() -> None:
    """Every public name of the installed werkzeug.local is in xlocal.local."""
    names = {
        name: _origin(obj, name)
        for name, obj in vars(werkzeug.local).items()
        if not name.startswith("_")
    }
    assert {"Local", "LocalProxy", "LocalStack", "ContextVar"} <= set(names)
    _check_namespace(names, getattr(werkzeug.local, "__all__", None))


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
