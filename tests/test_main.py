"""The ``python -m xlocal`` demonstration and the installed package."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import xlocal
from xlocal import __main__ as demo


def test_demonstration_runs_as_a_module() -> None:
    """``python -m xlocal`` runs and exits cleanly."""
    result = subprocess.run(
        [sys.executable, "-m", "xlocal"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "read 'thread-0' from 'demo'" in result.stdout


def test_demonstration_shows_isolation(capsys: pytest.CaptureFixture[str]) -> None:
    """Every handler in the demonstration reads back the request it bound."""
    demo.main()
    stdout = capsys.readouterr().out
    seen = re.findall(r"([\w-]+)\s+read '([\w-]+)' from '(\w+)'", stdout)
    assert len(seen) == 9, stdout
    assert all(request == read for request, read, _ in seen)
    assert {server for _, _, server in seen} == {"demo"}
    assert {request.split("-")[0] for request, _, _ in seen} == {
        "thread",
        "greenlet",
        "task",
    }
    assert "a plain threading.Thread starts with nothing bound" in stdout
    assert "the server still reads server='demo'" in stdout
    assert stdout.rstrip().endswith("<xlocal 'xcurrent' unbound>")


def test_package_is_installed_with_typing_marker() -> None:
    """The package under test is the installed one, with its metadata and py.typed."""
    assert importlib.metadata.version("xlocal") == xlocal.__version__
    assert (Path(xlocal.__file__).parent / "py.typed").is_file()
