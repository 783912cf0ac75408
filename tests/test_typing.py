"""mypy and pyright hold typed namespaces to their declarations: exactly the marked
lines of tests/checked/namespaces.py are errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import xlocal

CHECKED = Path(__file__).parent / "checked" / "namespaces.py"
#: Where the xlocal under test is, so that the checkers read that one.
PACKAGE_ROOT = str(Path(xlocal.__file__).resolve().parent.parent)


def expected_lines(checker: str = "") -> set[int]:
    """The lines marked ``# error``, and those marked ``# error: {checker}``: what
    only that checker reports (mypy with the plugin refuses a declared name that
    starts with "_", as the runtime does; pyright takes it for a dataclass field)."""
    lines = CHECKED.read_text().splitlines()
    ends = ("# error", f"# error: {checker}") if checker else ("# error",)
    marked = {n for n, line in enumerate(lines, 1) if line.endswith(ends)}
    assert len(marked) == 6 + (checker == "mypy")
    return marked


def mypy_errors(tmp_path: Path, *options: str, plugin: bool) -> set[int]:
    mypy_api = pytest.importorskip("mypy.api")
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\nstrict = True\n" + ("plugins = xlocal.mypy\n" if plugin else "")
    )
    # In this process, so that coverage sees the plugin run.
    stdout, stderr, _ = mypy_api.run(
        [
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            *options,
            str(CHECKED),
        ]
    )
    assert stderr == ""
    assert re.search(r"^\S*namespaces\.py:\d+: error:", stdout, re.M) or not re.search(
        r"error:", stdout
    ), stdout
    return {
        int(m.group(1))
        for m in re.finditer(r"^\S*namespaces\.py:(\d+): error:", stdout, re.M)
    }


@pytest.fixture(autouse=True)
def _checkers_read_this_xlocal(monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed xlocal is found where mypy looks anyway (and mypy refuses
    # site-packages on its path); a checkout's is shown to it.
    if Path(PACKAGE_ROOT).name not in ("site-packages", "dist-packages"):
        monkeypatch.setenv("MYPYPATH", PACKAGE_ROOT)


def test_mypy_with_the_plugin(tmp_path: Path) -> None:
    """With the plugin, mypy reports exactly the marked lines, on any target."""
    assert mypy_errors(tmp_path, plugin=True) == expected_lines("mypy")


def test_mypy_without_the_plugin(tmp_path: Path) -> None:
    """Without the plugin, mypy still types reads and refuses unknown names, but does
    not check the names and types of bindings (the README says so)."""
    reads_only = {n for n in expected_lines() if "print(current.usr)" in line_at(n)}
    assert mypy_errors(tmp_path, plugin=False) == reads_only


def line_at(number: int) -> str:
    return CHECKED.read_text().splitlines()[number - 1]


def test_pyright_strict(tmp_path: Path) -> None:
    """pyright in strict mode, targeting Python 3.13, reports exactly the marked
    lines."""
    pyright = Path(sys.executable).parent / "pyright"
    if not pyright.exists():
        pytest.skip("pyright is not installed in this environment")
    config = tmp_path / "pyrightconfig.json"
    config.write_text(
        json.dumps(
            {
                "pythonVersion": "3.13",
                "typeCheckingMode": "strict",
                "extraPaths": [PACKAGE_ROOT],
            }
        )
    )
    result = subprocess.run(
        [str(pyright), "--outputjson", "--project", str(config), str(CHECKED)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYRIGHT_PYTHON_FORCE_VERSION": ""},
        check=False,
    )
    report = json.loads(result.stdout)
    errors = {
        d["range"]["start"]["line"] + 1
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    }
    assert errors == expected_lines("pyright"), report["generalDiagnostics"]
