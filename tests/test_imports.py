"""The package's modules import one another downward only: no import circles."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import xlocal

_PACKAGE = Path(xlocal.__file__).parent


def _imports() -> dict[str, set[str]]:
    """Map each module of the package to the package modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(_PACKAGE.glob("*.py")):
        name = path.stem
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    found.add(node.module.split(".")[0])
                elif node.level == 1:
                    found.update(alias.name for alias in node.names)
                elif node.module and node.module.startswith("xlocal."):
                    found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found.update(
                    alias.name.split(".")[1]
                    for alias in node.names
                    if alias.name.startswith("xlocal.")
                )
        graph[name] = found - {name}
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str]:
    """Return one import circle of *graph* as a list of modules, or [] if none."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return []
        for other in sorted(graph.get(name, ())):
            circle = visit(other, [*path, name])
            if circle:
                return circle
        done.add(name)
        return []

    for name in sorted(graph):
        circle = visit(name, [])
        if circle:
            return circle
    return []


def test_no_import_circle() -> None:
    """No module of xlocal imports, directly or not, a module that imports it back."""
    graph = _imports()
    assert {"local", "proxy", "wsgi", "asgi", "_middleware", "_core"} <= set(graph)
    assert _circle(graph) == []


def test_circle_check_finds_a_circle() -> None:
    """The circle check reports a circle when there is one (so the test can fail)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circle(graph) == ["a", "b", "c", "a"]


def test_layers_point_down() -> None:
    """The proxy and the middleware plumbing know no store; the adapters no Local."""
    graph = _imports()
    # The core and its name rules, and the core's rooms for messages and frames.
    assert graph["proxy"] == {"_core", "_errors", "_frames", "_namespace"}
    assert graph["_middleware"] == {"_core", "_errors"}
    assert graph["_request"] == {"_core", "_frames", "_steps"}
    # The WSGI middleware enters a request's binding for the request (_binding).
    assert graph["wsgi"] == {"_binding", "_core", "_middleware", "_request"}
    assert graph["asgi"] == {"_core", "_middleware", "_request"}
    assert graph["local"] == {"_middleware", "proxy"}
    # Scopes stand on spawn's capture, and nothing imports them but the face.
    assert graph["scopes"] == {"spawn"}
    assert {name for name, found in graph.items() if "scopes" in found} == {"__init__"}
    assert "local" not in graph["_core"] | graph["spawn"] | graph["_steps"]


#: The rooms of the core, from the ground up (docs/architecture.rst): each imports only
#: rooms before it, and the ground it stands on.
CORE_ROOMS = [
    "_environment",
    "_frames",
    "_errors",
    "_registry",
    "_debug",
    "_misuse",
    "_binding",
    "_core",
]
GROUND = {"_codec", "_namespace", "_steps"}


def test_core_rooms_import_downward() -> None:
    """Each room of the core imports only the rooms before it in CORE_ROOMS and the
    ground, which imports no room of the package: no circle can form among them."""
    graph = _imports()
    assert {name for name in graph if name in CORE_ROOMS} == set(CORE_ROOMS)
    for number, room in enumerate(CORE_ROOMS):
        assert graph[room] <= {*CORE_ROOMS[:number], *GROUND}, room
    for room in GROUND:
        assert graph[room] == set(), room


PUBLIC_MODULES = [
    "xlocal",
    "xlocal.asgi",
    "xlocal.celery",
    "xlocal.dask",
    "xlocal.http",
    "xlocal.local",
    "xlocal.otel",
    "xlocal.portable",
    "xlocal.proxy",
    "xlocal.scopes",
    "xlocal.spawn",
    "xlocal.wsgi",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_names_live_in_public_modules(name: str) -> None:
    """Every name a public module lists in __all__ exists, and every class and
    function among them is shown (repr, docs, pickles) under a public module, never
    the private one that defines it."""
    module = importlib.import_module(name)
    for public in module.__all__:
        try:
            value = getattr(module, public)
        except ModuleNotFoundError as error:
            # A name imported when first used, whose engine is an optional dependency
            # not installed here (distributed on PyPy): there is nothing to show.
            assert error.name in ("distributed", "celery", "dask"), error  # noqa: PT017
            continue
        if inspect.isclass(value) or inspect.isfunction(value):
            home = value.__module__
            assert not any(part.startswith("_") for part in home.split(".")), (
                f"{name}.{public} is shown as {home}.{public}"
            )
