"""The engine benchmark's smoke run: both engines run and report (no timing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("celery")
pytest.importorskip("distributed")

try:
    import benchmarks
except ImportError:
    # benchmarks/ lives beside tests/ in the checkout, not in the installed package;
    # appended, so that the installed xlocal still comes first.
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    import benchmarks

from benchmarks import engines

assert benchmarks.__doc__


def test_both_engines_report(capsys: pytest.CaptureFixture[str]) -> None:
    """The smoke run times both cases on both real engines and gives verdicts."""
    assert engines.main(["--smoke"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["engine", "plain", "task"]
    assert [line.split()[0] for line in lines[1:]] == ["celery", "dask"]
    for line in lines[1:]:
        assert " µs = " in line
        assert line.split()[-1] in {"pass", "MISS", "(close)"}


def test_figures_and_verdicts() -> None:
    """Overheads are per-round ratios; the verdict says when a range straddles."""
    figures = engines.Figures("celery", [1.0, 1.0, 1.0], [1.02, 1.04, 1.08], own=0.01)
    median, q1, q3 = figures.overhead()
    assert (round(median, 3), round(q1, 3), round(q3, 3)) == (0.04, 0.03, 0.06)
    row = engines.format_figures([figures]).splitlines()[1]
    assert row.endswith("pass (close)")
    assert "+4.0% (+3.0% to +6.0%)" in row
    assert "10000 µs = 1.0%" in row
    slow = engines.Figures("dask", [1.0], [1.5])
    assert engines.format_figures([slow]).splitlines()[1].endswith("MISS")
