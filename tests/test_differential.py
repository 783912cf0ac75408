"""The compiled core and the pure core behave the same on random programs (issue 24).

Hypothesis draws programs of the interpreter in ``tests/differential.py``: bindings of
one or several names, nested and shadowing, reads that hit and miss, misuse, typed
namespaces, hostile names, a ``__getattr__`` hook, finalizers, threads, greenlets,
generators and the introspection of the core's callables.  Each program runs in two
long-lived worker processes, one with each core (the compiled one checked to be really
compiled), and their traces must be identical.  A failure prints the shortest program
found and both traces; ``python tests/differential.py PROGRAM`` replays it, with
``XLOCAL_NO_EXTENSIONS=1`` for the pure core.

The run is deterministic (``derandomize=True``, no example database) and draws 1,000
programs in a few seconds.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from differential import NAMES, XLOCALS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DIFFERENTIAL = Path(__file__).with_name("differential.py")
#: Seconds one program may take in a worker before it counts as hung.
TIMEOUT = 30

pytestmark = pytest.mark.skipif(
    sys.implementation.name != "cpython"
    or importlib.util.find_spec("xlocal._cxlocal") is None,
    reason="the compiled core is not built here (PyPy, or no C compiler at install)",
)


class Worker:
    """A process running ``differential.py --serve`` with one core."""

    def __init__(self, pure: bool) -> None:
        self.pure = pure
        self.start()

    def start(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("XLOCAL_NO_EXTENSIONS", "XLOCAL_DEBUG")
        }
        if self.pure:
            env["XLOCAL_NO_EXTENSIONS"] = "1"
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the worker's life
        self.process = subprocess.Popen(
            [sys.executable, str(DIFFERENTIAL), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        hello = self.readline()
        expected = ["python", False] if self.pure else ["c", True]
        assert hello == expected, (
            f"the worker meant to run the {'pure' if self.pure else 'compiled'} core "
            f"says [IMPLEMENTATION, compiled methods installed] = {hello}"
        )

    def readline(self) -> Any:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        line = self.process.stdout.readline() if ready else b""
        if line:
            return json.loads(line)
        # Hung or dead: what happened is the trace, and a fresh worker takes over.
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait()
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.stderr.seek(0)
        error = self.stderr.read().decode(errors="replace").splitlines()[-5:]
        self.stop()
        self.start()
        return [["worker died" if code else "worker hung", code, error]]

    def send(self, program: list[Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(program).encode() + b"\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        if self.process.wait(TIMEOUT) is None:
            self.process.kill()
        self.process.stdout.close()
        self.stderr.close()


@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[Worker, Worker]]:
    """A worker with the compiled core and one with the pure core."""
    compiled, pure = Worker(pure=False), Worker(pure=True)
    yield compiled, pure
    compiled.stop()
    pure.stop()


# -- the programs ------------------------------------------------------------------

#: Kinds of operation left out of the programs, to look past a difference while it is
#: being fixed: ``XLOCAL_DIFFERENTIAL_WITHOUT=introspect,getattr-hook,keyerror``
#: leaves out the introspection of the core's callables, the xlocals whose class has a
#: ``__getattr__``, and names whose ``__eq__`` or ``__hash__`` raises KeyError.
WITHOUT = set(
    filter(None, os.environ.get("XLOCAL_DIFFERENTIAL_WITHOUT", "").split(","))
)
# Most operations use the first xlocal, so that they meet each other's bindings.
XS = st.one_of(
    st.just(0),
    st.sampled_from(
        [
            i
            for i, make in enumerate(XLOCALS)
            if "getattr-hook" not in WITHOUT or not hasattr(type(make()), "__getattr__")
        ]
    ),
)
SLOTS = st.integers(0, 2)
NUMBERS = st.integers(0, 1)
BOUND = st.sampled_from(["a", "b", "c", "user", "tenant", "role"])


def hostile(
    ops: st.SearchStrategy[Any], vocabulary: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """A str subclass whose ``__eq__`` or ``__hash__`` runs *ops* or raises
    KeyError."""
    return st.fixed_dictionaries(
        {
            "name": vocabulary,
            "on": st.sampled_from(["eq", "hash"]),
            "now": st.booleans(),
            "do": ops
            if "keyerror" in WITHOUT
            else st.one_of(st.just([["keyerror"]]), ops),
        }
    )


def values(ops: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(0, 3), st.just("v"), st.fixed_dictionaries({"fin": ops})
    )


def operations(depth: int) -> st.SearchStrategy[list[Any]]:
    """Lists of operations, nested up to *depth* levels, whose names are mostly
    words of the program's vocabulary (``{"word": i}``, see programs), so that
    binds, reads and hostile names meet."""
    inner: st.SearchStrategy[Any] = operations(depth - 1) if depth else st.just([])
    words = st.fixed_dictionaries({"word": st.integers(0, 2)})
    keys = st.one_of(
        words, words, hostile(inner, words), st.sampled_from(NAMES), st.just({"int": 1})
    )
    pairs = st.lists(st.tuples(keys, values(inner)), max_size=3)
    how = st.sampled_from(["call", "call", "dunder", "method", "positional", "foreign"])
    bind = st.tuples(st.just("bind"), XS, pairs, SLOTS, how)
    read = st.tuples(
        st.just("read"),
        XS,
        keys,
        st.sampled_from(
            ["getattr", "hasattr", "default", "dunder", "typedunder", "code"]
        ),
    )
    leaves = [
        bind,
        bind,
        read,
        read,
        read,
        read,
        st.tuples(st.just("enter"), SLOTS),
        st.tuples(
            st.just("exit"),
            SLOTS,
            st.sampled_from(["here", "helper", "dunder", "keywords", "short", "error"]),
        ),
        st.tuples(st.sampled_from(["set", "del"]), XS, st.sampled_from(NAMES)),
        st.tuples(st.sampled_from(["repr", "dir"]), XS),
        st.tuples(st.just("drop"), SLOTS),
        st.tuples(st.just("gc")),
        st.tuples(st.just("debug"), st.booleans()),
        *(
            []
            if "introspect" in WITHOUT
            else [
                st.tuples(
                    st.just("introspect"),
                    st.sampled_from(
                        [
                            "call",
                            "getattribute",
                            "enter",
                            "exit",
                            "bound_enter",
                            "binding",
                        ]
                    ),
                    XS,
                )
            ]
        ),
        st.tuples(st.sampled_from(["gen_next", "gen_drop", "switch"]), NUMBERS),
        st.tuples(st.just("parent")),
    ]
    nested = [
        st.tuples(st.just("bindwith"), XS, pairs, how, inner),
        st.tuples(st.just("bindwith"), XS, pairs, how, inner),
        st.tuples(st.just("with"), SLOTS, inner, st.booleans()),
        st.tuples(st.just("with"), SLOTS, inner, st.booleans()),
        st.tuples(st.just("decorate"), SLOTS, inner),
        st.tuples(st.just("exitstack"), st.lists(SLOTS, max_size=2), inner),
        st.tuples(st.just("thread"), inner),
        st.tuples(st.just("greenlet"), NUMBERS, inner),
        st.tuples(st.just("gen"), NUMBERS, SLOTS, inner),
    ]
    op = st.one_of(*leaves, *(nested if depth else []))
    return st.lists(op.map(list), max_size=6 if depth == 2 else 3)


def spell(program: Any, vocabulary: list[str]) -> Any:
    """*program* with each ``{"word": i}`` replaced by a word of *vocabulary*."""
    if isinstance(program, dict):
        if set(program) == {"word"}:
            return vocabulary[program["word"] % len(vocabulary)]
        return {k: spell(v, vocabulary) for k, v in program.items()}
    if isinstance(program, (list, tuple)):
        return [spell(item, vocabulary) for item in program]
    return program


#: Programs: operations on a vocabulary of one to three names.
PROGRAMS = st.builds(
    spell,
    operations(2),
    st.lists(
        st.one_of(BOUND, st.sampled_from(NAMES)), min_size=1, max_size=3, unique=True
    ),
)


def report(program: list[Any], compiled: Any, pure: Any) -> str:
    """The failing program and both traces, one entry a line, with their diff."""

    def lines(trace: Any) -> list[str]:
        return [f"{i:3} {json.dumps(entry)}" for i, entry in enumerate(trace)]

    diff = difflib.unified_diff(
        lines(pure), lines(compiled), "pure core", "compiled core", lineterm=""
    )
    return "\n".join(
        [
            "the cores disagree on this program:",
            json.dumps(program),
            "--- diff (pure -> compiled):",
            *diff,
            "--- compiled core:",
            *lines(compiled),
            "--- pure core:",
            *lines(pure),
        ]
    )


#: ``HYPOTHESIS_PROFILE=long`` (tests/conftest.py) draws 5,000 fresh random programs.
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


@settings(
    max_examples=5000 if LONG else 1000,
    derandomize=not LONG,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=list(HealthCheck),
)
@given(program=PROGRAMS)
def test_the_cores_agree(workers: tuple[Worker, Worker], program: list[Any]) -> None:
    """Every program leaves the same trace on the compiled core as on the pure one."""
    for worker in workers:  # both run the program at once
        worker.send(program)
    compiled, pure = (worker.readline() for worker in workers)
    if compiled != pure:
        pytest.fail(report(program, compiled, pure), pytrace=False)


def test_a_program_runs_from_the_command_line() -> None:
    """``differential.py PROGRAM`` prints the core and the trace of one program."""
    program = [
        ["bind", 0, [["a", 1]], 0, "call"],
        ["with", 0, [["read", 0, "a", "getattr"]], False],
    ]
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(DIFFERENTIAL), json.dumps(program)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert time.monotonic() - start < TIMEOUT
    assert json.loads(out.stdout)["trace"] == [
        ["bind", "ok", "<Binding x(a=...)>"],
        ["with entered", "ok", "<xlocal 'x' bound: a>"],
        ["read", "ok", "1"],
        ["with", "exited"],
        [
            "end",
            [
                "<xlocal 'x' unbound>",
                "<xlocal at 0x? unbound>",
                "<Typed 't' unbound; declared: tenant, user>",
                "<Hooked 'h' unbound>",
                "<TypedHooked 'th' unbound; declared: tenant, user>",
                "<Methods 'm' unbound>",
                "<SubTyped 'st' unbound; declared: role, tenant, user>",
            ],
        ],
    ]
