"""Portable xlocals and tasks for the process tests: importable by spawned workers.

Under the spawn and forkserver start methods a worker knows an xlocal only once the
module that defines it is imported there, so the tests' xlocals and task functions
live here, not in the test module.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from xlocal import xlocal


@dataclasses.dataclass(frozen=True)
class Point:
    """A value the JSON codec does not take."""

    x: int
    y: int


class PointCodec:
    """Encodes a Point as JSON text: the README's dataclass example."""

    def encode(self, value: Point) -> str:
        return json.dumps(dataclasses.asdict(value))

    def decode(self, text: str) -> Point:
        return Point(**json.loads(text))


#: Two names portable, the others stay in their process.
request = xlocal("portable_app.request", portable={"user_id", "tenant"})
#: Every name portable.
trace = xlocal("portable_app.trace", portable=True)
#: Never portable.
local_only = xlocal("portable_app.local_only")
#: Portable with a codec of its own.
shape = xlocal("portable_app.shape", portable=True, codec=PointCodec())

ALL = {"request": request, "trace": trace, "local_only": local_only, "shape": shape}


def seen(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """What a task sees: every name bound on each xlocal above, and its arguments."""
    return {
        "pid": os.getpid(),
        "args": list(args),
        "kwargs": kwargs,
        "bound": {
            label: {name: getattr(x, name) for name in dir(x)}
            for label, x in ALL.items()
            if dir(x)
        },
    }


def nested(tenant: str) -> dict[str, Any]:
    """Bind tenant on top of the carried bindings, and report inside and after."""
    with request(tenant=tenant):
        inner = seen()
    return {"inner": inner, "after": seen()}


def fail(message: str) -> None:
    """A task that raises after checking that it has its bindings."""
    raise ValueError(f"{message} for {request.user_id}")


def square(n: int) -> tuple[int, Any]:
    """A task for Pool.map: its argument squared, with the user it runs for."""
    return n * n, getattr(request, "user_id", None)


def to_queue(queue: Any) -> None:
    """A Process target: put what it sees on *queue*."""
    queue.put(seen())


def returns_lock() -> Any:
    """A task whose result cannot be pickled back."""
    import threading  # noqa: PLC0415 - only this task needs it

    return threading.Lock()
