"""One run: time every case with pyperf, measure memory, gather the results.

Three sizes: ``full`` (the figures to publish, several minutes), ``fast`` (under a
minute, rougher) and ``smoke`` (in-process, minimal iterations, for the test suite: it
checks that every case still runs, not how fast).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .cases import CASES
from .hop import measure_hop
from .memory import measure
from .portable import measure_portable
from .report import Results, Row, machine
from .timing import SPAWN, skip_reason, smoke_values

__all__ = ["MODES", "Mode", "collect"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mode:
    """How hard one kind of run works."""

    name: str
    #: pyperf options; None times in-process instead (the smoke run).
    pyperf: tuple[str, ...] | None
    spawn: int
    frames: int
    cycles: int
    #: Rounds, and tasks per round, of the interleaved process-pool measurement.
    portable: tuple[int, int]
    #: Rounds, and requests per round, of the interleaved HTTP hop measurement.
    hop: tuple[int, int]


MODES = {
    mode.name: mode
    for mode in (
        Mode(
            "full",
            ("--processes=10", "--values=3", "--min-time=0.1"),
            SPAWN,
            1000,
            1_000_000,
            (15, 300),
            (21, 1000),
        ),
        Mode(
            "fast",
            ("--processes=3", "--values=2", "--min-time=0.01"),
            2000,
            1000,
            100_000,
            (5, 100),
            (9, 300),
        ),
        Mode("smoke", None, 10, 10, 1000, (2, 3), (2, 3)),
    )
}


def _pyperf_values(mode: Mode, ready: list[int]) -> dict[str, list[float]]:
    """Run the pyperf script on cases *ready*; seconds per operation by name."""
    import pyperf  # noqa: PLC0415 - the smoke run does without it

    assert mode.pyperf is not None
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "timing.json"
        command = [
            sys.executable,
            "-m",
            "benchmarks.timing",
            f"--spawn={mode.spawn}",
            f"--cases={','.join(map(str, ready))}",
            f"--output={output}",
            "--quiet",
            *mode.pyperf,
        ]
        if "XLOCAL05_DIR" in os.environ:
            command.append("--inherit-environ=XLOCAL05_DIR")
        # Progress goes to stderr, so that stdout holds the report alone.
        subprocess.run(command, cwd=ROOT, stdout=sys.stderr, check=True)
        suite = pyperf.BenchmarkSuite.load(str(output))
    return {
        bench.get_name(): list(bench.get_values()) for bench in suite.get_benchmarks()
    }


def collect(mode: Mode) -> Results:
    """Run every case and the memory figures at *mode*'s size."""
    reasons = [skip_reason(case, mode.spawn) for case in CASES]
    ready = [i for i, reason in enumerate(reasons) if reason is None]
    timed = _pyperf_values(mode, ready) if mode.pyperf is not None else {}
    rows = []
    for case, reason in zip(CASES, reasons):
        if reason is not None:
            rows.append(Row(case.group, case.peer, skipped=reason))
        elif mode.pyperf is None:
            rows.append(Row(case.group, case.peer, smoke_values(case, mode.spawn)))
        else:
            rows.append(Row(case.group, case.peer, timed[case.name]))
    memory = measure(frames=mode.frames, cycles=mode.cycles, spawn=mode.spawn)
    portable = measure_portable(*mode.portable)
    hop = measure_hop(*mode.hop)
    return Results(mode.name, machine(), rows, memory, portable, hop)
