"""Types of the engine adapters' API, checked by ``mypy --strict`` (never executed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from dask.delayed import Delayed
from typing_extensions import assert_type

import xlocal.celery as xcelery
import xlocal.dask as xdask


def double(x: int) -> int:
    return 2 * x


def celery_app(app: Any) -> None:
    handle = xcelery.install(app)
    assert_type(handle, xcelery.Installed)
    assert_type(handle.installed, bool)
    handle.uninstall()
    xcelery.uninstall(app)
    assert_type(xcelery.HEADER, str)
    assert_type(xcelery.OPTION, str)


assert_type(xdask.carried(double), xdask.Carried)
assert_type(xdask.carried(double).carrier, Mapping[str, str])
assert_type(xdask.delayed(double), Callable[..., Delayed])
assert_type(xdask.delayed(pure=True)(double), Callable[..., Delayed])
client_class: type[xdask.Client] = xdask.Client
assert_type(xdask.carried(double, signing_key=b"secret"), xdask.Carried)
assert_type(xdask.delayed(double, signing_key=b"secret"), Callable[..., Delayed])
assert_type(xdask.delayed(signing_key=b"secret")(double), Callable[..., Delayed])
assert_type(xdask.get_client(signing_key=b"secret"), Any)
assert_type(xdask.carried(double, signing_key=[b"new", b"old"]), xdask.Carried)
xdask.carried(double, signing_key="secret")  # type: ignore[arg-type]
