"""Types of the public API, checked by ``mypy --strict`` in CI (never executed)."""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from typing_extensions import assert_type

import xlocal as xl
from xlocal import Binding, xlocal

xcurrent = xlocal("xcurrent")
assert_type(xcurrent(request=1), Binding[xlocal])
with xcurrent(request=1) as x:
    assert_type(x, xlocal)
    assert_type(xcurrent.request, Any)
    request: int = xcurrent.request


class Current(xlocal):
    """A typed namespace: annotated names read with their types."""

    user: str


current = xl.new(Current, "current")
with current(user="ann") as c:
    assert_type(c, Current)
    assert_type(current.user, str)


def handler(request: str, *, retries: int = 0) -> bytes:
    return request.encode()


async def async_handler(request: str) -> int:
    return len(request)


# Helpers keep the exact signature of what they wrap: right calls have the right
# types, and wrong calls are errors (strict mode reports an unused "ignore").
assert_type(xl.wrap(handler)("r"), bytes)
assert_type(xl.isolated(handler)("r", retries=2), bytes)
assert_type(xcurrent(user="ann")(handler)("r"), bytes)
coroutine = xcurrent(user="ann")(async_handler)("r")
_ = assert_type(coroutine, Coroutine[Any, Any, int])
xl.wrap(handler)(1)  # type: ignore[arg-type]
xl.wrap(handler)("r", tries=1)  # type: ignore[call-arg]
xcurrent(user="ann")(handler)(b"r")  # type: ignore[arg-type]
snapshot_run_wrong = xl.capture().run(handler, 1)  # type: ignore[arg-type]

snapshot = xl.capture()
assert_type(snapshot, xl.Snapshot)
assert_type(snapshot.run(handler, "r", retries=1), bytes)
assert_type(snapshot.bindings(xcurrent), Mapping[str, Any])

executor = xl.ContextExecutor(ThreadPoolExecutor())
assert_type(executor.submit(handler, "r"), Future[bytes])
thread = xl.Thread(target=handler, args=("r",))
assert_type(thread, xl.Thread)
