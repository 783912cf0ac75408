"""Types of the public API, checked by ``mypy --strict`` in CI (never executed)."""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from typing_extensions import assert_type

import xlocal as xl
from xlocal import Binding, xlocal
from xlocal.portable import Carried, Codec, Extracted, carry, extract, inject

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


# Portable bindings: the carrier is a mapping of strings; carry keeps the signature.


class Money:
    amount: int


class MoneyCodec:
    def encode(self, value: Money) -> str:
        return str(value.amount)

    def decode(self, text: str) -> Money:
        money = Money()
        money.amount = int(text)
        return money


codec: Codec = MoneyCodec()
portable = xlocal("typing.portable", portable={"user_id"})
priced = xlocal("typing.priced", portable=True, codec=MoneyCodec())
assert_type(inject(), dict[str, str])
headers: dict[str, str] = {"accept": "*/*"}
assert_type(inject(headers), dict[str, str])
assert_type(extract(headers), Extracted)
assert_type(extract(headers, unknown="error", limit=100), Extracted)
assert_type(carry(handler)("r"), bytes)
assert_type(carry(handler, unknown="error")("r", retries=1), bytes)
assert isinstance(carry(handler), Carried)
carry(handler)(1)  # type: ignore[arg-type]
extract(headers, unknown="sometimes")  # type: ignore[arg-type]
inject(["not", "a", "mapping"])  # type: ignore[call-overload]
xlocal("typing.bad", portable=True, codec=3)  # type: ignore[arg-type]
assert_type(inject(key=b"secret"), dict[str, str])
assert_type(extract(headers, key=b"secret"), Extracted)
inject(key="secret")  # type: ignore[arg-type]
