"""Mutation testing for xlocal: does a test notice when the code changes?

Coverage says a line ran; a mutant says whether any test would notice the line doing
something else.  This runner makes small changes to ``xlocal/*.py``, one at a time (a
flipped comparison, ``and`` for ``or``, a deleted statement, a forced condition, a
dropped keyword argument, a removed decorator, a changed constant), and runs the tests
against each.  A mutant that no test fails on *survived*: either a behaviour no test
pins, or an *equivalent* mutant (a change no caller can observe), which is listed with
its reason in ``tools/mutation-equivalents.txt``.

Usage (the ``mutation`` tox environment runs the first)::

    python tools/mutation.py run                  # every module (see README.txt)
    python tools/mutation.py run xlocal/spawn.py  # one module
    python tools/mutation.py run --sample 40 --seed 17   # what .ci/run runs
    python tools/mutation.py list xlocal/spawn.py # the mutants, without running them
    python tools/mutation.py run xlocal/spawn.py --only shutdown \
        --tests tests/test_spawn.py               # some mutants, against chosen tests
    cp .mutation/report.json last.json; python tools/mutation.py run \
        --survivors last.json                     # again, the survivors of that run
    python tools/mutation.py map                  # only the coverage map (see below)

How it stays fast enough for the whole package:

1. ``map`` runs the suite once, in process, under coverage with one coverage context
   per test: for every line of ``xlocal/`` it records which tests ran it, and how long
   each test takes.  The map is kept in ``.mutation/`` and rebuilt when a source, test
   or configuration file changes.  (``.ci/run``'s coverage gate reads the same data.)
2. Each mutant runs only the tests that ran its lines, fastest first, stopping at the
   first failure (``-x``).  A line that only runs at import or in a subprocess
   (definitions, class bodies, worker processes) has no test in the map: its mutants run
   the test modules of their module (``TESTS_OF``).
3. Each worker keeps a copy of the repository (``.mutation/work/N``), writes the mutant
   into it, and forks a process that has already imported pytest and the heavy test
   dependencies; that process runs pytest on the copy, with ``PYTHONPATH`` naming the
   copy so that subprocesses the tests start (process pools, Celery and Dask workers,
   servers) import the mutant too.  The pure-Python core is tested
   (``XLOCAL_NO_EXTENSIONS=1``); the compiled core is C and is not mutated here.

Every mutant has a key that names its module, its function and the change, without
line numbers, so that the equivalents file survives edits elsewhere in a module.
Strings are not mutated: the misuse messages are pinned whole by tests instead
(``tests/test_messages.py``).  A line that ends in ``# pragma: no mutate`` is skipped.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import importlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".mutation"
EQUIVALENTS = ROOT / "tools" / "mutation-equivalents.txt"

#: The rooms of the core (docs/architecture.rst): they serve both cores, since the
#: compiled one calls back into them for every uncommon case.
CORE_ROOMS = [
    "xlocal/_environment.py",
    "xlocal/_frames.py",
    "xlocal/_errors.py",
    "xlocal/_registry.py",
    "xlocal/_debug.py",
    "xlocal/_misuse.py",
    "xlocal/_binding.py",
    "xlocal/_core.py",
]

#: The test modules of the core's rooms.
CORE_TESTS = [
    "tests/test_core.py",
    "tests/test_faults.py",
    "tests/test_debug.py",
    "tests/test_implementation.py",
    "tests/test_portable.py",
]

#: The test modules of each module: what runs a mutant on a line no test ran in the
#: coverage map (import-time code, code run only in other processes).
TESTS_OF: dict[str, list[str]] = {
    "xlocal/__init__.py": ["tests/test_core.py", "tests/test_main.py"],
    "xlocal/__main__.py": ["tests/test_main.py"],
    "xlocal/_codec.py": ["tests/test_portable.py"],
    **dict.fromkeys(CORE_ROOMS, CORE_TESTS),
    "xlocal/_dask_client.py": ["tests/test_dask.py"],
    "xlocal/_dask_task.py": ["tests/test_dask.py"],
    "xlocal/_baggage.py": [
        "tests/test_http_clients.py",
        "tests/test_http_frameworks.py",
    ],
    "xlocal/_engines.py": ["tests/test_celery.py", "tests/test_dask.py"],
    "xlocal/_middleware.py": ["tests/test_wsgi.py", "tests/test_asgi.py"],
    "xlocal/_namespace.py": ["tests/test_namespace.py"],
    "xlocal/_request.py": ["tests/test_request.py", "tests/test_servers.py"],
    "xlocal/_steps.py": [
        "tests/test_spawn.py",
        "tests/test_core.py",
        "tests/test_portable.py",
    ],
    "xlocal/asgi.py": ["tests/test_asgi.py"],
    "xlocal/celery.py": ["tests/test_celery.py"],
    "xlocal/dask.py": ["tests/test_dask.py"],
    "xlocal/http.py": [
        "tests/test_http_clients.py",
        "tests/test_http_frameworks.py",
        "tests/test_http_recipes.py",
        "tests/test_http_services.py",
    ],
    "xlocal/local.py": [
        "tests/test_local.py",
        "tests/test_werkzeug.py",
        "tests/test_spawn.py",
    ],
    "xlocal/mypy.py": ["tests/test_typing.py"],
    "xlocal/otel.py": ["tests/test_otel.py"],
    "xlocal/portable.py": [
        "tests/test_portable.py",
        "tests/test_portable_processes.py",
        "tests/test_imports.py",
    ],
    "xlocal/proxy.py": ["tests/test_werkzeug.py", "tests/test_local.py"],
    "xlocal/scopes.py": ["tests/test_scope.py"],
    "xlocal/spawn.py": ["tests/test_spawn.py", "tests/test_portable_processes.py"],
    "xlocal/wsgi.py": ["tests/test_wsgi.py"],
}

#: Test modules that count for every module: the package's public face (names, their
#: modules, what importing loads).  Module-level lines run once per process, so the
#: map credits them to whichever test imported the module first.
EVERY_MODULE = ["tests/test_imports.py"]

#: Modules imported once by each worker before it forks, so that each mutant's process
#: does not import them again.  None of them imports xlocal.
PRELOAD = [
    "pytest",
    "_pytest.doctest",
    "_pytest.python",
    "hypothesis",
    "hypothesis.strategies",
    "_hypothesis_pytestplugin",
    "anyio.pytest_plugin",
    "greenlet",
    "gevent",
    "eventlet",
    "werkzeug",
    "flask",
    "starlette",
    "httpx",
    "uvicorn",
    "celery",
    "kombu",
    "redis",
    "dask",
    "distributed",
    "django",
    "quart",
]

#: Decorators that only type checkers read: removing one changes nothing at run time.
TYPING_DECORATORS = {
    "overload",
    "final",
    "override",
    "dataclass_transform",
    "runtime_checkable",
    "no_type_check",
}

#: Calls that only type checkers read.
TYPING_CALLS = {"TypeVar", "ParamSpec", "NewType", "TypeAlias"}

PYTEST_ARGS = [
    "-x",
    "-q",
    "-p",
    "no:cacheprovider",
    "--no-header",
    "-o",
    "addopts=",
    "--doctest-glob=README.txt",
    "-W",
    "ignore::pytest.PytestAssertRewriteWarning",
]


# -- mutants ------------------------------------------------------------------------


@dataclass
class Mutant:
    module: str  # "xlocal/spawn.py"
    key: str  # module::function::operator: before -> after
    line: int
    end_line: int
    start: int  # byte offsets of the replaced text in the module's source
    end: int
    replacement: str
    function: tuple[int, int] | None  # the lines of the function it changes, if any

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement.encode() + source[self.end :]


_NEGATED = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BOUNDARY = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_ARITHMETIC = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult,
    ast.Mod: ast.Mult,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
}
_SIMPLE = (
    ast.Expr,
    ast.Assign,
    ast.AugAssign,
    ast.AnnAssign,
    ast.Raise,
    ast.Return,
    ast.Delete,
    ast.Assert,
    ast.Break,
    ast.Continue,
)


def _called(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _short(text: str, width: int = 72) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class _Mutator(ast.NodeVisitor):
    """Walks one module and collects its mutants, skipping what cannot matter."""

    def __init__(self, module: str, source: bytes) -> None:
        self.module = module
        self.source = source
        self.lines = source.splitlines(keepends=True)
        self.line_starts = [0]
        for text in self.lines:
            self.line_starts.append(self.line_starts[-1] + len(text))
        self.scope: list[str] = []
        self.functions: list[tuple[int, int] | None] = [None]
        self.tails: set[int] = set()
        self.found: list[Mutant] = []
        self.keys: dict[str, int] = {}

    # where things are

    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def text(self, node: Any) -> str:
        start = self.offset(node.lineno, node.col_offset)
        end = self.offset(node.end_lineno, node.end_col_offset)
        return self.source[start:end].decode()

    def skipped(self, node: Any) -> bool:
        line = self.lines[node.lineno - 1]
        return b"pragma: no mutate" in line

    def add(
        self,
        node: Any,
        operator: str,
        replacement: str,
        *,
        before: str | None = None,
        span: Any = None,
    ) -> None:
        span = span or node
        if self.skipped(node):
            return
        before = self.text(span) if before is None else before
        function = ".".join(self.scope) or "<module>"
        change = f"{_short(before)} -> {_short(replacement)}"
        key = f"{self.module}::{function}::{operator}: {change}"
        self.keys[key] = self.keys.get(key, 0) + 1
        if self.keys[key] > 1:
            key += f" #{self.keys[key]}"
        self.found.append(
            Mutant(
                self.module,
                key,
                span.lineno,
                span.end_lineno,
                self.offset(span.lineno, span.col_offset),
                self.offset(span.end_lineno, span.end_col_offset),
                replacement,
                self.functions[-1],
            )
        )

    def replace_expression(self, node: ast.expr, operator: str, new: ast.expr) -> None:
        self.add(node, operator, f"({ast.unparse(new)})")

    # what is never mutated

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        pass  # f-strings are messages (and their offsets are unreliable before 3.12)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for statement in node.orelse:
                self.visit(statement)
            return
        self.force(test)
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        self.force(node.test)
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.force(node.test)
        self.generic_visit(node)

    def force(self, test: ast.expr) -> None:
        if isinstance(test, ast.Constant):
            return
        self.add(test, "condition", "(True)")
        self.add(test, "condition", "(False)")

    def visit_arguments(self, node: ast.arguments) -> None:
        for default in [*node.defaults, *[d for d in node.kw_defaults if d]]:
            self.visit(default)  # defaults, not annotations

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)  # the value, not the annotation

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        names = {
            d.id if isinstance(d, ast.Name) else getattr(d, "attr", None)
            for d in node.decorator_list
        }
        if names & {"overload"}:
            return
        self.functions.append((node.lineno, node.end_lineno or node.lineno))
        last = node.body[-1]
        if isinstance(last, ast.Return) and (
            last.value is None
            or (isinstance(last.value, ast.Constant) and last.value.value is None)
        ):
            self.tails.add(id(last))  # deleting it returns None all the same
        self.decorators(node)
        self.visit(node.args)
        self.scope.append(node.name)
        self.body(node.body)
        self.scope.pop()
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.decorators(node)
        for base in node.bases:
            self.visit(base)
        self.scope.append(node.name)
        self.functions.append(None)
        self.body(node.body)
        self.functions.pop()
        self.scope.pop()

    def decorators(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    ) -> None:
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            name = (
                target.id
                if isinstance(target, ast.Name)
                else getattr(target, "attr", "")
            )
            if name not in TYPING_DECORATORS and not self.skipped(decorator):
                self.add(decorator, "decorator", "", before="@" + self.text(decorator))
                self.found[-1].start -= 1  # the "@" before the decorator's expression

    def body(self, statements: list[ast.stmt]) -> None:
        first = statements[0] if statements else None
        for statement in statements:
            docstring = (
                statement is first
                and isinstance(statement, ast.Expr)
                and isinstance(statement.value, ast.Constant)
                and isinstance(statement.value.value, str)
            )
            if not docstring:
                self.visit(statement)

    def visit_Module(self, node: ast.Module) -> None:
        self.body(node.body)

    def generic_visit(self, node: ast.AST) -> None:
        for field, value in ast.iter_fields(node):
            if field in ("body", "orelse", "finalbody") and isinstance(value, list):
                self.body(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)
            elif isinstance(value, ast.AST):
                self.visit(value)

    # what is mutated

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, _SIMPLE):
            self.delete(node)
            if isinstance(node, ast.Break):
                self.add(node, "loop", "continue")
            elif isinstance(node, ast.Continue):
                self.add(node, "loop", "break")
            elif isinstance(node, ast.AugAssign) and type(node.op) in _ARITHMETIC:
                new = ast.AugAssign(
                    node.target, _ARITHMETIC[type(node.op)](), node.value
                )
                self.add(node, "arithmetic", ast.unparse(new))
        super().visit(node)

    def delete(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return  # ``...`` and bare strings do nothing
        if id(node) in self.tails:
            return
        if isinstance(node, ast.AnnAssign) and node.value is None:
            return  # a bare annotation: a declaration, read with the class's others
        value = getattr(node, "value", None)
        if isinstance(value, ast.Call) and _called(value) in TYPING_CALLS:
            return
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name)
            and t.id in ("__all__", "__slots__", "__match_args__")
            for t in node.targets
        ):
            return
        self.add(node, "delete", "pass")

    def visit_Compare(self, node: ast.Compare) -> None:
        for i, op in enumerate(node.ops):
            for table, operator in ((_NEGATED, "compare"), (_BOUNDARY, "boundary")):
                if type(op) in table:
                    ops = list(node.ops)
                    ops[i] = table[type(op)]()
                    self.replace_expression(
                        node, operator, ast.Compare(node.left, ops, node.comparators)
                    )
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self.replace_expression(node, "boolean", ast.BoolOp(other, node.values))
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self.replace_expression(node, "not", node.operand)
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if type(node.op) in _ARITHMETIC and not (
            isinstance(node.op, ast.BitOr) and self.scope == []  # type unions at import
        ):
            new = ast.BinOp(node.left, _ARITHMETIC[type(node.op)](), node.right)
            self.replace_expression(node, "arithmetic", new)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self.add(node, "constant", str(not value))
        elif isinstance(value, int):
            self.add(node, "constant", str(value + 1))

    def visit_Call(self, node: ast.Call) -> None:
        if _called(node) in TYPING_CALLS:
            return
        for keyword in node.keywords:
            if keyword.arg is None:
                continue
            new = ast.Call(
                node.func, node.args, [k for k in node.keywords if k is not keyword]
            )
            self.add(
                node,
                "argument",
                f"({ast.unparse(new)})",
                before=f"{ast.unparse(node.func)}(…{keyword.arg}=…)",
            )
        self.generic_visit(node)


def mutants_of(module: str) -> list[Mutant]:
    """Every mutant of one module (``xlocal/name.py``), each compiling."""
    source = (ROOT / module).read_bytes()
    mutator = _Mutator(module, source)
    mutator.visit(ast.parse(source))
    found = []
    for mutant in mutator.found:
        try:
            compile(mutant.apply(source), module, "exec")
        except SyntaxError:
            continue
        found.append(mutant)
    return found


def modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "xlocal").glob("*.py"))


def equivalents() -> dict[str, str]:
    """The checked-in equivalent mutants: key -> why no caller can tell."""
    found: dict[str, str] = {}
    key = None
    for line in EQUIVALENTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace():
            if key is None:
                raise SystemExit(f"{EQUIVALENTS}: a reason without a mutant: {line!r}")
            found[key] = (found[key] + " " + line.strip()).strip()
        else:
            key = line.strip()
            found[key] = ""
    missing = [k for k, why in found.items() if not why]
    if missing:
        raise SystemExit(f"{EQUIVALENTS}: say why each is equivalent: {missing}")
    return found


# -- the coverage map ---------------------------------------------------------------


def _fingerprint() -> str:
    digest = hashlib.sha256()
    files = sorted(
        [
            *ROOT.glob("xlocal/*.py"),
            *ROOT.glob("tests/**/*.py"),
            ROOT / "README.txt",
            ROOT / "setup.cfg",
            ROOT / "pyproject.toml",
        ]
    )
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _mapper(coverage: Any) -> Any:
    """A pytest plugin: one coverage context per test, and each test's duration."""
    import pytest  # noqa: PLC0415 - not imported by the command that starts workers

    class Mapper:
        def __init__(self) -> None:
            self.durations: dict[str, float] = {}

        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
            coverage.switch_context(item.nodeid)
            try:
                return (yield)
            finally:
                coverage.switch_context("")

        def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
            self.durations[report.nodeid] = (
                self.durations.get(report.nodeid, 0.0) + report.duration
            )

    return Mapper()


def build_map(pytest_args: list[str]) -> int:
    """Run the suite under coverage, one context per test; write ``.mutation/map.json``.

    Also leaves the coverage data in ``.coverage`` (branch coverage, setup.cfg's
    settings), which ``coverage report`` reads: .ci/run's gate uses this run.
    """
    # Imported here, after nothing has imported xlocal: coverage measures its import.
    import coverage  # noqa: PLC0415
    import pytest  # noqa: PLC0415

    os.environ.setdefault("XLOCAL_NO_EXTENSIONS", "1")
    cov = coverage.Coverage(config_file=str(ROOT / "setup.cfg"))
    mapper = _mapper(cov)
    cov.start()
    try:
        status = pytest.main(
            ["-q", "-p", "no:cacheprovider", *pytest_args], plugins=[mapper]
        )
    finally:
        cov.stop()
        cov.save()
    if status != 0:
        print(
            f"mutation map: the suite failed (status {status}); no map written",
            file=sys.stderr,
        )
        return int(status)
    data = cov.get_data()
    tests = sorted(mapper.durations, key=mapper.durations.__getitem__)
    index = {name: i for i, name in enumerate(tests)}
    lines: dict[str, dict[int, list[int]]] = {}
    for filename in data.measured_files():
        path = Path(filename)
        if path.parent.name != "xlocal":
            continue
        by_line = data.contexts_by_lineno(filename)
        lines[f"xlocal/{path.name}"] = {
            line: sorted({index[c] for c in contexts if c in index})
            for line, contexts in by_line.items()
        }
    STATE.mkdir(exist_ok=True)
    (STATE / "map.json").write_text(
        json.dumps(
            {
                "fingerprint": _fingerprint(),
                "tests": [[name, round(mapper.durations[name], 4)] for name in tests],
                "lines": lines,
            }
        )
    )
    print(f"mutation map: {len(tests)} tests, {sum(map(len, lines.values()))} lines")
    return 0


def load_map(rebuild: bool, reuse: bool = False) -> dict[str, Any]:
    """The coverage map, made again if a source, test or setting changed since.

    With *reuse*, a map made before changes is used as it is: tests added since are
    not chosen, and lines of changed modules may be off; the unchanged modules' results
    stay right but may miss kills.
    """
    path = STATE / "map.json"
    if path.exists() and not rebuild:
        saved = json.loads(path.read_text())
        if reuse or saved["fingerprint"] == _fingerprint():
            return saved  # type: ignore[no-any-return]
        print("mutation: sources changed since the map was made; making it again")
    status = subprocess.call([sys.executable, __file__, "map"], cwd=ROOT)
    if status != 0:
        raise SystemExit("mutation: the unmutated suite must pass first")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def tests_for(
    mutant: Mutant, coverage_map: dict[str, Any], budget: float
) -> tuple[list[str], bool]:
    """The tests to run against a mutant, and whether the map saw its lines run.

    First the tests that ran the mutant's lines; for a line no test ran in this
    process (a definition's defaults and decorators, code that only the compiled
    core's run or a worker process reaches), the tests that ran its function.  Then the
    rest of its module's own test modules (``TESTS_OF``), which also test what runs in
    subprocesses, where the map does not look.  Each part is fastest first and cut at
    *budget* seconds of the map's timings (0: no cut); the slowest tests of a hot line
    (the stress and model tests, the server loads) run only with ``--budget 0``.
    """
    by_line = coverage_map["lines"].get(mutant.module, {})
    timings = coverage_map["tests"]  # fastest first
    regions = [(mutant.line, mutant.end_line)]
    if mutant.function:
        regions.append(mutant.function)
    covering: set[int] = set()
    for first, last in regions:
        for line in range(first, last + 1):
            covering.update(by_line.get(str(line), ()))
        if covering:
            break
    own_files = tuple(
        f"{name}::" for name in [*TESTS_OF.get(mutant.module, []), *EVERY_MODULE]
    )
    own = {i for i, (name, _) in enumerate(timings) if name.startswith(own_files)}
    chosen: list[str] = []
    for part in (sorted(covering), sorted(own - covering)):
        spent = 0.0
        for i in part:
            name, seconds = timings[i]
            if budget and spent and spent + seconds > budget:
                break
            chosen.append(name)
            spent += seconds
    seen = bool(by_line) and any(
        by_line.get(str(line)) for line in range(mutant.line, mutant.end_line + 1)
    )
    return chosen or ["tests"], seen


# -- running mutants ----------------------------------------------------------------


def _compiled_core() -> Path | None:
    """The installed compiled core, which each copy gets beside the mutant's sources."""
    found = subprocess.run(
        [sys.executable, "-c", "import xlocal._cxlocal as c; print(c.__file__)"],
        env={**os.environ, "XLOCAL_NO_EXTENSIONS": "1"},
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    return Path(found.stdout.strip()) if found.returncode == 0 else None


def _copy_repository(target: Path, compiled: Path | None) -> None:
    if target.exists():
        shutil.rmtree(target)
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    )
    for name in listed.stdout.decode().split("\0"):
        if not name or name.startswith((".ci/", "docs/")):
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    # Uncommitted sources count too: the run tests the working tree.
    for path in [*ROOT.glob("xlocal/*.py"), *ROOT.glob("tests/**/*.py")]:
        (target / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / path.relative_to(ROOT))
    if compiled:
        shutil.copy2(compiled, target / "xlocal" / compiled.name)


def worker(copy: str) -> None:
    """A worker process: reads mutants as JSON lines, answers with their outcome.

    It imports pytest and the heavy test dependencies once, then forks a fresh process
    for each run of a mutant's tests, on the copy holding the mutant.
    """
    os.environ["PYTHONPATH"] = copy
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eventlet's deprecation, say: not the tests'
        for name in PRELOAD:
            with contextlib.suppress(Exception):  # an optional test dependency
                importlib.import_module(name)
    assert "xlocal" not in sys.modules, "a preloaded module imported xlocal"
    for request in sys.stdin:
        job = json.loads(request)
        path = Path(copy) / job["module"]
        original = path.read_bytes()
        path.write_bytes(job["source"].encode())
        started = time.monotonic()
        outcome, failed = "survived", list[str]()
        for core in job["cores"]:
            outcome, failed = _run_tests(
                copy, job["tests"], core, started + job["timeout"]
            )
            if outcome != "survived":
                break
        path.write_bytes(original)
        seconds = round(time.monotonic() - started, 2)
        answer = {"outcome": outcome, "seconds": seconds, "failed": failed[:1]}
        print(json.dumps(answer), flush=True)


def _run_tests(
    copy: str, tests: list[str], core: str, deadline: float
) -> tuple[str, list[str]]:
    """Run *tests* in a forked process, on the pure core or the compiled one."""
    log = Path(copy) / "mutant.log"
    pid = os.fork()
    if pid == 0:  # the mutant's process
        os.setpgid(0, 0)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(copy)
        sys.path.insert(0, copy)
        os.environ.pop("XLOCAL_NO_EXTENSIONS", None)
        if core == "python":
            os.environ["XLOCAL_NO_EXTENSIONS"] = "1"
        import pytest  # noqa: PLC0415 - imported by the worker already

        try:
            status = pytest.main([*PYTEST_ARGS, *tests])
        except BaseException:  # the mutant broke pytest itself
            traceback.print_exc()
            status = 3
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(status))
    outcome = None
    while outcome is None:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            # 1: a test failed; 2-4: the mutant broke collection or pytest itself;
            # negative: a signal (the compiled core crashed on the mutant's pure code)
            outcome = {0: "survived", 5: "error: no tests ran"}.get(code, "killed")
        elif time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            outcome = "timeout"
        else:
            time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # what the tests left running
    failed = re.findall(
        r"^(?:FAILED|ERROR) (\S+)", log.read_text(errors="replace"), re.M
    )
    return outcome, failed


@dataclass
class Result:
    key: str
    module: str
    line: int
    outcome: str
    seconds: float
    tests: int
    failed: list[str]
    diff: str


def _stale(known: dict[str, str], everything: list[Mutant], chosen: list[str]) -> bool:
    """Report listed equivalents that no longer name a mutant of the chosen modules."""
    keys = {m.key for m in everything}
    stale = sorted(k for k in known if k.split("::", 1)[0] in chosen and k not in keys)
    if stale:
        print(f"mutation: {EQUIVALENTS.relative_to(ROOT)} lists mutants that no longer")
        print("exist (the code changed; remove them or give their new key):")
        for key in stale:
            print(f"  {key}")
    return bool(stale)


def _unnamed(chosen: list[str]) -> bool:
    """Report chosen modules without test modules in TESTS_OF: their import-time lines
    would be tried against the tests of the package's face alone."""
    unnamed = [module for module in chosen if module not in TESTS_OF]
    if unnamed:
        print(
            f"mutation: TESTS_OF names no test modules for {', '.join(unnamed)}: "
            f"add them",
            file=sys.stderr,
        )
    return bool(unnamed)


def _select(args: argparse.Namespace, chosen: list[str]) -> list[Mutant]:
    """The mutants of the chosen modules that this run tries (--sample, --only)."""
    everything = [m for module in chosen for m in mutants_of(module)]
    if args.sample:
        everything = random.Random(args.seed).sample(
            everything, min(args.sample, len(everything))
        )
        everything.sort(key=lambda m: (m.module, m.line))
    if args.survivors:
        report = json.loads(Path(args.survivors).read_text())
        again = {r["key"] for r in report if r["outcome"] == "survived"}
        everything = [m for m in everything if m.key in again]
    return [m for m in everything if args.only in m.key]


def run(args: argparse.Namespace) -> int:
    chosen = args.modules or modules()
    if _unnamed(chosen):
        return 1
    # --tests names the tests outright: no map is needed (to check new tests quickly).
    coverage_map = (
        {"tests": [], "lines": {}}
        if args.tests
        else load_map(args.rebuild_map, args.reuse_map)
    )
    durations = dict(map(tuple, coverage_map["tests"]))
    known = equivalents()
    everything = _select(args, chosen)
    todo = [m for m in everything if m.key not in known]
    if not (args.sample or args.only or args.survivors) and _stale(
        known, everything, chosen
    ):
        return 1
    print(
        f"mutation: {len(everything)} mutants in {len(chosen)} modules, "
        f"{len(everything) - len(todo)} listed as equivalent; {args.jobs} workers"
    )
    sources = {module: (ROOT / module).read_bytes() for module in chosen}
    queue = list(reversed(todo))
    results: list[Result] = []
    lock = threading.Lock()
    started = time.monotonic()

    compiled = _compiled_core()

    def work(number: int) -> None:
        copy = STATE / "work" / str(number)
        _copy_repository(copy, compiled)
        process = subprocess.Popen(
            [sys.executable, __file__, "worker", str(copy)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=copy,
        )
        assert process.stdin
        assert process.stdout
        while True:
            with lock:
                if not queue:
                    break
                mutant = queue.pop()
            if args.tests:
                tests, covered = args.tests, True
            else:
                tests, covered = tests_for(mutant, coverage_map, args.budget)
            expected = sum(durations.get(t, 5.0) for t in tests)
            # The core's rooms serve both cores: a mutant of one, or a line the pure
            # core's run did not reach, also runs on the compiled core.
            both = not covered or mutant.module in CORE_ROOMS
            cores = ["python", "c"] if compiled and both else ["python"]
            job = {
                "module": mutant.module,
                "source": mutant.apply(sources[mutant.module]).decode(),
                "tests": tests,
                "cores": cores,
                "timeout": args.timeout + 2 * expected * len(cores),
            }
            process.stdin.write(json.dumps(job) + "\n")
            process.stdin.flush()
            answer = json.loads(process.stdout.readline())
            before = sources[mutant.module][mutant.start : mutant.end].decode()
            result = Result(
                mutant.key,
                mutant.module,
                mutant.line,
                answer["outcome"],
                answer["seconds"],
                len(tests),
                answer["failed"],
                f"{_short(before, 200)!r} -> {mutant.replacement!r}",
            )
            with lock:
                results.append(result)
                if result.outcome != "killed" or args.verbose:
                    print(
                        f"  {result.outcome:8} {mutant.module}:{mutant.line} "
                        f"{mutant.key.split('::', 2)[2]}"
                        f"  [{result.tests} tests, {result.seconds}s]",
                        flush=True,
                    )
                elif len(results) % 50 == 0:
                    print(
                        f"  ... {len(results)}/{len(todo)} in "
                        f"{time.monotonic() - started:.0f}s",
                        flush=True,
                    )
        process.stdin.close()
        process.wait()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(args.jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return report(everything, known, results, args, time.monotonic() - started)


def report(
    everything: list[Mutant],
    known: dict[str, str],
    results: list[Result],
    args: argparse.Namespace,
    seconds: float,
) -> int:
    by_module: dict[str, dict[str, int]] = {}
    for mutant in everything:
        counts = by_module.setdefault(
            mutant.module, {"mutants": 0, "equivalent": 0, "killed": 0}
        )
        counts["mutants"] += 1
        counts["equivalent"] += mutant.key in known
    for result in results:
        by_module[result.module]["killed"] += result.outcome in ("killed", "timeout")
    failing = []
    print(f"\n{'module':24} {'mutants':>8} {'equiv.':>7} {'killed':>7} {'score':>7}")
    totals = {"mutants": 0, "equivalent": 0, "killed": 0}
    for module, counts in sorted(by_module.items()):
        for name in totals:
            totals[name] += counts[name]
        real = counts["mutants"] - counts["equivalent"]
        score = 100.0 * counts["killed"] / real if real else 100.0
        print(
            f"{module:24} {counts['mutants']:8} {counts['equivalent']:7} "
            f"{counts['killed']:7} {score:6.1f}%"
        )
        if not args.sample and score < args.fail_under:
            failing.append(module)
    real = totals["mutants"] - totals["equivalent"]
    score = 100.0 * totals["killed"] / real if real else 100.0
    print(
        f"{'total':24} {totals['mutants']:8} {totals['equivalent']:7} "
        f"{totals['killed']:7} {score:6.1f}%"
    )
    if args.sample and score < args.fail_under:
        failing.append("the sample")
    survivors = [r for r in results if r.outcome not in ("killed", "timeout")]
    STATE.mkdir(exist_ok=True)
    (STATE / "report.json").write_text(
        json.dumps([asdict(r) for r in results], indent=1)
    )
    if survivors:
        print(
            f"\n{len(survivors)} survived (details in .mutation/report.json); each "
            f"needs a test that pins the behaviour, or a line in "
            f"{EQUIVALENTS.relative_to(ROOT)}:"
        )
        for r in sorted(survivors, key=lambda r: (r.module, r.line)):
            print(f"{r.key}\n    {r.module}:{r.line}  {r.outcome}: {r.diff}")
    print(
        f"\nmutation: {len(results)} mutants run in {seconds:.0f}s; score {score:.1f}%"
        f" (at least {args.fail_under}% "
        f"{'overall' if args.sample else 'in every module'})"
    )
    if failing:
        print(
            f"mutation: below {args.fail_under}%: {', '.join(failing)}", file=sys.stderr
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/mutation.py", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run mutants and report per module")
    run_parser.add_argument(
        "modules", nargs="*", help="xlocal/name.py (default: every module)"
    )
    run_parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    run_parser.add_argument(
        "--sample", type=int, default=0, help="run only this many mutants"
    )
    run_parser.add_argument("--seed", type=int, default=17, help="which sample")
    run_parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds beyond 2x the tests' time"
    )
    run_parser.add_argument("--fail-under", type=float, default=97.0)
    run_parser.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds (the map's timings) of covering tests per mutant; 0: all",
    )
    run_parser.add_argument("--rebuild-map", action="store_true")
    run_parser.add_argument(
        "--reuse-map",
        action="store_true",
        help="use the saved map even if sources changed since (see load_map)",
    )
    run_parser.add_argument(
        "--only", default="", help="only the mutants whose key contains this text"
    )
    run_parser.add_argument(
        "--survivors",
        metavar="REPORT",
        help="only the mutants that survived the run that wrote REPORT (a copy of "
        ".mutation/report.json): to check the answers to a run's survivors",
    )
    run_parser.add_argument(
        "--tests",
        action="append",
        default=[],
        help="run these tests (pytest node ids or files) against every mutant, "
        "instead of the covering ones (repeatable; no map needed)",
    )
    run_parser.add_argument(
        "-v", "--verbose", action="store_true", help="print killed mutants too"
    )
    list_parser = commands.add_parser(
        "list", help="print the mutants without running them"
    )
    list_parser.add_argument("modules", nargs="*")
    map_parser = commands.add_parser(
        "map", help="run the suite under coverage: which test runs which line"
    )
    map_parser.add_argument("pytest_args", nargs="*")
    worker_parser = commands.add_parser("worker")
    worker_parser.add_argument("copy")
    args = parser.parse_args(argv)
    if args.command == "map":
        return build_map(args.pytest_args)
    if args.command == "worker":
        worker(args.copy)
        return 0
    if args.command == "list":
        for module in args.modules or modules():
            found = mutants_of(module)
            for mutant in found:
                print(f"{mutant.line:5} {mutant.key}")
            print(f"{module}: {len(found)} mutants", file=sys.stderr)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
