"""Types of structured scopes, checked by ``mypy --strict`` in CI (never executed)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

from typing_extensions import assert_type

import xlocal as xl
from xlocal.scopes import FutureScope, TaskScope


def parse(text: str, base: int = 10) -> int:
    return int(text, base)


async def fetch(url: str) -> bytes:
    return url.encode()


with xl.scope(limit=4) as s:
    assert_type(s, FutureScope)
    assert_type(s.spawn(parse, "12", base=8), Future[int])
    assert_type(s.cancelled, bool)
    assert_type(s.cancel_event, threading.Event)
    s.spawn(parse, 12)  # type: ignore[arg-type]
    s.spawn(parse, "1", bass=2)  # type: ignore[call-arg]

with xl.scope(kind="greenlet") as g:
    assert_type(g.spawn(parse, "1"), Future[int])


async def main() -> None:
    async with xl.scope() as t:
        assert_type(t, TaskScope)
        assert_type(t.spawn(fetch, "u"), asyncio.Task[bytes])
        t.spawn(parse, "1")  # type: ignore[arg-type]


assert_type(xl.scope.current(), xl.scope | None)
xl.scope(kind="process")  # type: ignore[arg-type]
