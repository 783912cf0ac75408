# pyright: strict
"""Typed namespaces as type checkers see them (read by tests/test_typing.py, never run).

Every line that ends in ``# error`` must be reported by mypy and by pyright, and no
other line; a line that ends in ``# error: mypy`` by mypy (with xlocal's plugin) only.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from typing_extensions import assert_type

import xlocal as xl
from xlocal import Binding, xlocal


class User:
    name: str = "ann"


class Current(xlocal):
    user: User
    tenant: str = "public"
    instances: ClassVar[int] = 0

    def describe(self) -> str:
        return f"{self.user.name}@{self.tenant}"


current = xl.new(Current, "current")
with current(user=User()) as bound:
    assert_type(bound, Current)
    assert_type(current.user, User)
    assert_type(current.tenant, str)
    assert_type(current.describe(), str)
assert_type(current(tenant="acme"), Binding[Current])
assert_type(current.instances, int)

with current(usr=User()):  # error
    pass
with current(user=42):  # error
    pass
print(current.usr)  # error


class Request(Current):
    path: str


request = xl.new(Request, "request")
with request(user=User(), path="/"):
    assert_type(request.path, str)
with request(path=3):  # error
    pass

plain = xlocal("plain")
with plain(anything=1, other="x") as p:
    assert_type(p, xlocal)
    assert_type(plain.anything, Any)

with current(instances=1):  # error
    pass


class Labelled:
    label: str = "plain"


class Tagged(xlocal, Labelled):
    user: User
    format: Callable[[int], str]
    _seen: int = 0

    def greet(self, greeting: str) -> str:
        return f"{greeting}, {self.user.name}"


tagged = xl.new(Tagged, "tagged")
assert_type(tagged.greet("hi"), str)
assert_type(tagged.format(1), str)
with tagged(label="x"):  # error
    pass
with tagged(_seen=1):  # error: mypy
    pass
