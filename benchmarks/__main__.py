"""``python -m benchmarks``: time xlocal and its peers, print the table and targets."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from pathlib import Path

from .peers import install
from .report import format_report
from .run import MODES, collect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.strip("`: ") if __doc__ else None,
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--fast", action="store_true", help="a rough run, under a minute")
    size.add_argument("--smoke", action="store_true", help="check that every case runs")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also plot the times")
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also save the figures"
    )
    parser.add_argument(
        "--setup",
        action="store_true",
        help="install benchmarks/requirements.txt and xlocal 0.5 (aside), then exit",
    )
    args = parser.parse_args(argv)
    if args.plot and not _importable("matplotlib"):
        parser.error(
            "--plot needs matplotlib: `python -m benchmarks --setup` installs it "
            "(or `pip install matplotlib`)"
        )
    if args.setup:
        install()
        return 0
    mode = MODES["fast" if args.fast else "smoke" if args.smoke else "full"]
    results = collect(mode)
    sys.stdout.write(format_report(results))
    if args.json:
        args.json.write_text(json.dumps(dataclasses.asdict(results), indent=1) + "\n")
    if args.plot:
        from .plot import plot  # noqa: PLC0415 - matplotlib is optional

        plot(results, args.plot)
    return 0


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
