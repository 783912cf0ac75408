"""Finalizers that bind while the garbage collector runs inside a bind.

CPython 3.9 to 3.11 corrupt a thread's context when a collection starting inside
``ContextVar.set`` or ``reset`` runs a finalizer that sets a variable of that thread
(fixed in CPython 3.12).  The compiled core holds the collector off inside its own
sets and resets (3.10 and 3.11; 3.9 has no C API for it); the pure core cannot, and
the README's Known limits say so.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import xlocal

HERE = os.path.dirname(os.path.abspath(__file__))

_AFFECTED = sys.implementation.name == "cpython" and sys.version_info < (3, 12)


@pytest.mark.skipif(
    sys.implementation.name != "cpython",
    reason="a test of CPython's collector, run every few allocations with "
    "gc.set_threshold, which other interpreters do not have",
)
@pytest.mark.skipif(
    _AFFECTED and (xlocal.IMPLEMENTATION == "python" or sys.version_info < (3, 10)),
    reason="CPython before 3.12 crashes here unless the compiled core (3.10+) holds "
    "the collector off: a known limit (README, Known limits)",
)
@pytest.mark.parametrize("debug", ["0", "1"])
def test_finalizers_that_bind_during_collections_in_binds(debug: str) -> None:
    """Finalizers in reference cycles bind and read while four threads bind and read,
    with the collector running every few allocations: every thread's bindings stay
    right and the process survives, over several runs (on an affected CPython without
    the compiled core's protection, most runs crash).  Debug mode takes the pure
    core's road to the same sets and resets."""
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, os.path.join(HERE, "collector_binds.py"), "100000"],
            env={**os.environ, "XLOCAL_DEBUG": debug},
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout == f"survived {xlocal.IMPLEMENTATION}\n"
