"""The ``python -m xlocal`` demonstration and the installed package."""

from __future__ import annotations

import importlib.metadata
import os
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
    assert PLAIN_THREAD in stdout
    assert "the server still reads server='demo'" in stdout
    assert stdout.rstrip().endswith("<xlocal 'xcurrent' unbound>")


#: What the demonstration says of a plain thread: threads inherit their creator's
#: context with Python 3.14's -X thread_inherit_context=1.
PLAIN_THREAD = (
    "a plain threading.Thread starts with ['server'] (-X thread_inherit_context: it "
    "inherits its creator's)"
    if getattr(sys.flags, "thread_inherit_context", 0)
    else "a plain threading.Thread starts with nothing bound"
)


def test_package_is_installed_with_typing_marker() -> None:
    """The package under test is the installed one, with its metadata and py.typed."""
    assert importlib.metadata.version("xlocal") == xlocal.__version__
    assert (Path(xlocal.__file__).parent / "py.typed").is_file()


def test_demonstration_output_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """The demonstration prints exactly its story: the header, each kind of unit with
    its handlers in order, the plain thread, and the xlocal unbound afterwards."""
    demo.main()
    lines = [
        f"xlocal {xlocal.__version__}: a server binds server='demo' and spawns one "
        f"handler",
        "per request (3 at once) with request bound in the new unit.",
        "",
    ]
    for title, kind in [
        ("threads (xlocal.Thread)", "thread"),
        ("gevent greenlets (gevent.spawn(xlocal.wrap(...)))", "greenlet"),
        ("asyncio tasks", "task"),
    ]:
        lines.append(title)
        lines += [
            f"    {kind}-{i:<{12 - len(kind) - 1}} read '{kind}-{i}' from 'demo'"
            for i in range(3)
        ]
    lines += [
        "",
        f"{PLAIN_THREAD};",
        "the server still reads server='demo';",
        "after its with-block: <xlocal 'xcurrent' unbound>",
    ]
    assert capsys.readouterr().out == "\n".join(lines) + "\n"


def test_demonstration_handler_pauses_inside_its_binding() -> None:
    """A handler lets the others run while it is inside its binding, then reads it."""
    seen: list[str] = []
    with demo.xcurrent(server="s", request="r"):
        line = demo.handle(lambda: seen.append(demo.xcurrent.request))
    assert seen == ["r"]
    assert line == "r            read 'r' from 's'"


def test_demonstration_without_gevent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without gevent the demonstration says how to install it instead of failing."""
    monkeypatch.setitem(sys.modules, "gevent", None)  # import gevent fails
    assert demo.in_greenlets() == [
        "(gevent is not installed: pip install 'xlocal[gevent]')"
    ]


def test_demonstration_runs_only_as_a_script() -> None:
    """Importing xlocal.__main__ prints nothing; only ``python -m xlocal`` runs it."""
    result = subprocess.run(
        [sys.executable, "-c", "import xlocal.__main__"],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == ""


def test_package_namespace_is_its_api() -> None:
    """The package's own names are its API (``__all__``) and its modules: nothing
    left over from building it."""
    names = {name for name in vars(xlocal) if not name.startswith("__")}
    modules = {name for name in names if type(getattr(xlocal, name)) is type(importlib)}
    assert names - modules == set(xlocal.__all__) - {"__version__"}
