"""The ``python -m xlocal`` demonstration and the installed package."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import xlocal


def test_demonstration_shows_isolation() -> None:
    """Every handler in the demonstration reads back the request it bound."""
    result = subprocess.run(
        [sys.executable, "-m", "xlocal"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    pairs = re.findall(r"bound '([\w-]+)'\s+read '([\w-]+)'", result.stdout)
    assert len(pairs) == 9, result.stdout
    assert all(bound == read for bound, read in pairs)
    assert {bound.split("-")[0] for bound, _ in pairs} == {"thread", "greenlet", "task"}
    assert "the caller still reads 'main'" in result.stdout
    assert "a new thread starts with nothing bound" in result.stdout
    assert result.stdout.rstrip().endswith("<xlocal 'xcurrent' unbound>")


def test_package_is_installed_with_typing_marker() -> None:
    """The package under test is the installed one, with its metadata and py.typed."""
    assert importlib.metadata.version("xlocal") == xlocal.__version__
    assert (Path(xlocal.__file__).parent / "py.typed").is_file()
