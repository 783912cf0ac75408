"""The benchmark suite's smoke run: every case still runs and reports (no timing)."""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path
from typing import Any

import pytest

import xlocal

try:
    import benchmarks
except ImportError:
    # benchmarks/ lives beside tests/ in the checkout, not in the installed package;
    # appended, so that the installed xlocal still comes first.
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    import benchmarks

from benchmarks import cases, hop, memory, peers
from benchmarks.__main__ import main
from benchmarks.report import Results, format_report, targets
from benchmarks.run import MODES, collect

pytestmark = pytest.mark.filterwarnings(
    # PyPy 3.9 pools fork (they cannot spawn), and its at-fork hooks report a stray
    # callback as unraisable: the interpreter's, not the benchmark's.
    r"ignore:Exception ignored in. fork hook:pytest.PytestUnraisableExceptionWarning"
)

assert benchmarks.__doc__


@pytest.fixture(scope="module")
def results() -> Results:
    """One smoke run, shared by the tests of this module."""
    return collect(MODES["smoke"])


def test_every_case_reports(results: Results) -> None:
    """Each case gives positive times per operation or says why it was skipped."""
    assert [(r.group, r.peer) for r in results.rows] == [
        (c.group, c.peer) for c in cases.CASES
    ]
    for row in results.rows:
        assert row.skipped or (row.values and min(row.values) > 0), row


def test_xlocal_and_stdlib_peers_always_run(results: Results) -> None:
    """The cases that need no optional peer are never skipped."""
    always = {"xlocal", "threading.local", "contextvars", "no local", "plain call"}
    for row in results.rows:
        if row.group == cases.SCOPE_TASKS and sys.version_info < (3, 11):
            assert row.skipped == "asyncio.TaskGroup is new in Python 3.11", row
        elif row.peer in always and row.group != cases.SNAPSHOT:
            assert not row.skipped, row


@pytest.mark.cpython_only("the memory figures come from tracemalloc")
def test_memory_figures(results: Results) -> None:
    """The memory part measures frames, cycles and what spawned units leave."""
    memory = results.memory
    assert memory.frame_bytes["xlocal"] > 0
    assert memory.frame_bytes["contextvars"] > 0
    assert memory.cycles == MODES["smoke"].cycles
    assert memory.live_values == {"gevent greenlets": 0, "asyncio tasks": 0}


def test_portable_figures(results: Results) -> None:
    """The portable part times pool tasks, carried tasks and inject+extract in turns."""
    portable = results.portable
    assert portable.rounds == MODES["smoke"].portable[0]
    assert set(portable.seconds) == {
        "process pool task",
        "ContextExecutor task",
        "inject + extract",
    }
    for values in portable.seconds.values():
        assert len(values) == portable.rounds
        assert min(values) > 0
    text = format_report(results)
    assert "Portable bindings: time per task" in text
    assert "inject+extract of 3 values / process pool task" in text


def test_hop_figures(results: Results) -> None:
    """The HTTP hop part times the same loopback request of each client with and
    without xlocal's signed carrier, in turns, and the report states each client's
    ratio and its target."""
    measured = results.hop
    assert (measured.rounds, measured.requests) == MODES["smoke"].hop
    assert list(measured.seconds) == [
        "http.client",
        "http.client + xlocal",
        "requests",
        "requests + xlocal",
    ]
    for values in measured.seconds.values():
        assert len(values) == measured.rounds
        assert min(values) > 0
    text = format_report(results)
    assert "HTTP hop: time per request" in text
    verdicts = {t.what: t for t in targets(results)}
    for client in ("http.client", "requests"):
        target = verdicts[
            f"HTTP hop ({client}) carrying 3 values, signed / the same hop without"
        ]
        assert target.limit == "<= 1.05x"


def test_hop_carries_and_binds() -> None:
    """Each request of the hop checks what its server's app saw bound: the value sent
    on the carried ways, nothing on the plain ones (so each ratio compares a carried
    request with one that carries nothing); a carrying client whose server does not
    bind is caught."""
    measured = hop.measure_hop(1, 2)  # every request checked
    assert set(measured.seconds) == {
        hop.way(client, carry) for client in hop.CLIENTS for carry in (False, True)
    }
    with (
        hop._server(False) as port,
        hop.request(user_id=7, tenant="acme", role="admin"),
    ):
        for client in hop.CLIENTS:
            send, closable = hop._MAKERS[client](port, True)
            try:
                with pytest.raises(
                    RuntimeError,
                    match=r"^the hop failed: 200 b'-', where b'7' was expected "
                    r"\(the bindings carried\)$",
                ):
                    send()
            finally:
                closable.close()


def test_report_states_every_target(results: Results) -> None:
    """The report has the machine, the table and a verdict for each target."""
    text = format_report(results)
    python = f"python: {platform.python_implementation()} {platform.python_version()}"
    for heading in (python, "cpu: ", "peer / xlocal", "Targets"):
        assert heading in text
    found = targets(results)
    # 15, the pure core's two, and the compiled core's eight when it is in use.
    assert len(found) == (28 if xlocal.IMPLEMENTATION == "c" else 20)
    assert f"xlocal core: {xlocal.IMPLEMENTATION}" in text
    for target in found:
        assert target.what in text
        assert target.verdict.split()[0] in {"pass", "MISS", "n/a"}


def test_memory_without_tracemalloc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where tracemalloc is missing (PyPy), the memory figures and their targets are
    reported as not available, saying why, and the timing still runs."""
    monkeypatch.setattr(memory, "HAS_TRACEMALLOC", False)
    results = collect(MODES["smoke"])
    assert results.memory.unavailable == memory.NO_TRACEMALLOC
    assert results.memory.frame_bytes == {}
    assert set(results.memory.skipped) == {
        "contextvars",
        "xlocal",
        "xlocal 0.5",
        "gevent greenlets",
        "asyncio tasks",
    }
    found = targets(results)
    assert len(found) == (28 if xlocal.IMPLEMENTATION == "c" else 20)
    unavailable = [t for t in found if t.verdict == f"n/a ({memory.NO_TRACEMALLOC})"]
    assert len(unavailable) == 3
    text = format_report(results)
    assert f"skipped: {memory.NO_TRACEMALLOC}" in text
    assert any(row.values for row in results.rows if row.peer == "xlocal")


def test_missing_peers_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without werkzeug, asgiref or xlocal 0.5, their cases are skipped, saying why."""

    def unavailable(*args: Any) -> Any:
        raise peers.Unavailable("not here")

    monkeypatch.setattr(cases, "xlocal05", unavailable)
    real = peers.optional

    def optional(module: str) -> Any:
        if module.startswith(("werkzeug", "asgiref")):
            unavailable()
        return real(module)

    monkeypatch.setattr(cases, "optional", optional)
    monkeypatch.setattr(sys.modules["benchmarks.memory"], "xlocal05", unavailable)
    results = collect(MODES["smoke"])
    skipped = {r.peer for r in results.rows if r.skipped == "not here"}
    assert skipped == {
        "werkzeug Local",
        "werkzeug LocalProxy",
        "asgiref Local",
        "xlocal 0.5",
    }
    verdicts = {t.what: t.verdict for t in targets(results)}
    assert verdicts["read: xlocal 0.5 / xlocal"] == "n/a (peer skipped)"
    assert "not here" in format_report(results)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks --smoke --json FILE`` prints the report, saves figures."""
    assert main(["--smoke", "--json", str(tmp_path / "figures.json")]) == 0
    assert "Targets" in capsys.readouterr().out
    assert '"rows"' in (tmp_path / "figures.json").read_text()


def test_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--plot`` writes a PNG where matplotlib is installed, and where it is not,
    refuses before measuring anything, saying how to get it."""
    png = tmp_path / "figures.png"
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        refuses_without_matplotlib(png, capsys)
    else:
        assert main(["--smoke", "--plot", str(png)]) == 0
        assert png.read_bytes().startswith(b"\x89PNG")


def test_plot_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without matplotlib, ``--plot`` is refused at once with the way to install it."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes importing it fail
    refuses_without_matplotlib(tmp_path / "figures.png", capsys)


def refuses_without_matplotlib(png: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--smoke", "--plot", str(png)])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert (
        "--plot needs matplotlib: `python -m benchmarks --setup` installs it" in error
    )
    assert not png.exists()


def test_cores_comparison_runs() -> None:
    """The quick comparison of the two cores times every case and checks every
    target it names against cases it times."""
    from benchmarks import cores  # noqa: PLC0415 - only this test needs it

    seconds = cores.measure(1)
    assert set(seconds) == set(cores.STATEMENTS)
    assert all(len(values) == 1 and values[0] > 0 for values in seconds.values())
    for _, top, bottom, _ in cores.TARGETS:
        assert {top, bottom} <= set(seconds)
