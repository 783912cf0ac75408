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
    seen = re.findall(r"([\w-]+)\s+read '([\w-]+)' from '(\w+)'", result.stdout)
    assert len(seen) == 9, result.stdout
    assert all(request == read for request, read, _ in seen)
    assert {server for _, _, server in seen} == {"demo"}
    assert {request.split("-")[0] for request, _, _ in seen} == {
        "thread",
        "greenlet",
        "task",
    }
    assert "a plain threading.Thread starts with nothing bound" in result.stdout
    assert "the server still reads server='demo'" in result.stdout
    assert result.stdout.rstrip().endswith("<xlocal 'xcurrent' unbound>")


def test_package_is_installed_with_typing_marker() -> None:
    """The package under test is the installed one, with its metadata and py.typed."""
    assert importlib.metadata.version("xlocal") == xlocal.__version__
    assert (Path(xlocal.__file__).parent / "py.typed").is_file()
