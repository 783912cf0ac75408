"""The functions of tests/test_dask.py: imported by the tests and, when they unpickle
a task, by the real worker processes of the cluster.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any, Callable

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


def spawns(tag: Any = None, child: Callable[..., Any] = seen) -> dict[str, Any]:
    """Submit *child* from inside a task, plainly and under a nested binding."""
    client = xdask.get_client()
    plain = client.submit(child, f"{tag}-plain", pure=False)
    with request(trace=f"{tag}-nested"):
        nested = client.submit(child, f"{tag}-nested", pure=False)
    with xdask.worker_client() as inner:
        mapped = inner.map(child, [f"{tag}-map"], pure=False)
        children = inner.gather([plain, nested, *mapped])
    return {**view(), "tag": tag, "children": children}


def once(x: int) -> Any:
    """A call said to be pure, whose result tells one computation from another."""
    return (x, getattr(request, "tenant", None), uuid.uuid4().hex)


async def aseen(tag: Any = None) -> dict[str, Any]:
    """Report what this coroutine sees across awaits, and inside a binding of its own
    that spans one; what it sees last is after that binding."""
    first = view()["request"]
    await asyncio.sleep(0)
    with request(trace=f"{tag}-inside"):
        await asyncio.sleep(0)
        inside = view()["request"]
    await asyncio.sleep(0)
    return {**view(), "tag": tag, "first": first, "inside": inside}


async def afails(tag: Any = None) -> None:
    """Bind more on top of the carried bindings, await, then raise."""
    with request(trace="inside"), local_only(leak="yes"):
        await asyncio.sleep(0)
        raise ValueError(f"task failed on purpose: {tag}")


#: The groups of ``meets``, each its arrived tags and the event that all arrived.
_groups: dict[str, tuple[list[Any], asyncio.Event]] = {}


async def meets(group: str, size: int, tag: Any) -> dict[str, Any]:
    """Bind, then wait there until *size* coroutines of *group* are waiting on this
    worker's loop (so that they interleave); report what it sees then and after."""
    if group not in _groups:
        _groups[group] = ([], asyncio.Event())
    arrived, everyone = _groups[group]
    with request(trace=f"{tag}-inside"):
        arrived.append(tag)
        if len(arrived) == size:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 60)
        inside = view()["request"]
    return {**view(), "tag": tag, "inside": inside}
