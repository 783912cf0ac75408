"""Types of the public API, checked by ``mypy --strict`` in CI (never executed)."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

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


current = Current("current")
with current(user="ann") as c:
    assert_type(c, Current)
    assert_type(current.user, str)
    assert_type(current.anything_else, Any)
