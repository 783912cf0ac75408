"""The functions of tests/test_dask.py: imported by the tests and, when they unpickle
a task, by the real worker processes of the cluster.
"""

from __future__ import annotations

import os
from typing import Any

import xlocal.dask as xdask
from xlocal import xlocal

request = xlocal("tests.dask.request", portable={"user_id", "tenant", "trace"})
local_only = xlocal("tests.dask.local_only")


def view() -> dict[str, Any]:
    """What the running task sees on both test xlocals, and where it runs."""
    return {
        "request": {name: getattr(request, name) for name in dir(request)},
        "local_only": {name: getattr(local_only, name) for name in dir(local_only)},
        "pid": os.getpid(),
    }


def seen(tag: Any = None) -> dict[str, Any]:
    """Report what this task sees."""
    return {**view(), "tag": tag}


def pure_user(x: int) -> Any:
    """A pure function of its argument, that also reads the bound user."""
    return (x, getattr(request, "user_id", None))


def fails(tag: Any = None) -> None:
    """Bind more on top of the carried bindings, then raise."""
    with request(trace="inside"), local_only(leak="yes"):
        raise ValueError(f"task failed on purpose: {tag}")


def spawns(tag: Any = None) -> dict[str, Any]:
    """Submit ``seen`` from inside a task, plainly and under a nested binding."""
    client = xdask.get_client()
    plain = client.submit(seen, f"{tag}-plain", pure=False)
    with request(trace=f"{tag}-nested"):
        nested = client.submit(seen, f"{tag}-nested", pure=False)
    with xdask.worker_client() as inner:
        mapped = inner.map(seen, [f"{tag}-map"], pure=False)
        children = inner.gather([plain, nested, *mapped])
    return {**view(), "tag": tag, "children": children}
