"""Shared fixtures: every test must leave no binding behind."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from xlocal import xlocal
from xlocal._core import _EMPTY

# Hypothesis profiles, chosen with HYPOTHESIS_PROFILE: "ci" (the default) is
# deterministic and bounded to a few seconds; "long" draws many more random programs,
# with a fresh seed each run (hypothesis prints how to reproduce a failure).
settings.register_profile(
    "ci",
    max_examples=150,
    stateful_step_count=40,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=1000,
    stateful_step_count=80,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Every xlocal a test makes through the ``make_xlocal`` fixture, to check afterwards.
_made: weakref.WeakSet[xlocal] = weakref.WeakSet()


@pytest.fixture
def make_xlocal() -> Any:
    """Make xlocal objects whose emptiness is checked after the test."""

    def make(name: str | None = "xcurrent") -> xlocal:
        x = xlocal(name)
        _made.add(x)
        return x

    return make


@pytest.fixture
def xcurrent(make_xlocal: Any) -> xlocal:
    """A fresh xlocal named 'xcurrent'."""
    x: xlocal = make_xlocal("xcurrent")
    return x


@pytest.fixture(autouse=True)
def _nothing_left_bound() -> Iterator[None]:
    """Each test starts and ends with nothing bound in the test's own execution."""
    _made.clear()
    yield
    left = [x for x in _made if object.__getattribute__(x, "_var").get() is not _EMPTY]
    _made.clear()
    assert left == [], "left bound after the test"


def collected(ref: weakref.ref[Any]) -> bool:
    """Whether the object behind *ref* is gone once garbage is collected."""
    gc.collect()
    return ref() is None
