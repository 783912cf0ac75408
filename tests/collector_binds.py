"""Finalizers that bind, run by garbage collections that start inside binds, in four
threads at once: ``python collector_binds.py ROUNDS``.  Run by tests/test_collector.py.

On CPython 3.9 to 3.11 a collection that starts inside ``ContextVar.set`` or ``reset``
and runs a finalizer that sets a variable of the same thread corrupts the thread's
context (a CPython bug, fixed in 3.12): the process crashes, or a binding is lost.
The compiled core holds the collector off inside its sets and resets.
"""

from __future__ import annotations

import gc
import sys
import threading

import xlocal

x = xlocal.xlocal("x")


class Finalized:
    """Garbage in a reference cycle, whose finalizer binds and reads."""

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self) -> None:
        with x(fin=1):
            assert x.fin == 1


def work(rounds: int) -> None:
    for i in range(rounds):
        Finalized()
        with x(a=i):
            with x(b=i):
                assert (x.a, x.b) == (i, i)
            assert not hasattr(x, "b")
    assert not hasattr(x, "a")


if __name__ == "__main__":
    gc.set_threshold(5, 1, 1)
    rounds = int(sys.argv[1])
    threads = [threading.Thread(target=work, args=(rounds,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("survived", xlocal.IMPLEMENTATION)
