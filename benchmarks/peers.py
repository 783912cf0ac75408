"""Loading the peers that xlocal is measured against, each one optional.

A peer that cannot be imported makes its cases report "skipped" with the reason, so
that a run (and the smoke test) works with whatever is installed.  xlocal 0.5 is a
single top-level module ``xlocal.py`` that would shadow this package: ``--setup``
installs it into a directory of its own and :func:`xlocal05` imports it from there
under another name.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["PEERS_DIR", "Unavailable", "install", "optional", "pure_core", "xlocal05"]

HERE = Path(__file__).resolve().parent

#: Where ``--setup`` installs xlocal 0.5; ``XLOCAL05_DIR`` overrides it.
PEERS_DIR = Path(os.environ.get("XLOCAL05_DIR", HERE / ".peers"))


class Unavailable(Exception):  # noqa: N818 - a reason to skip, not an error
    """A peer cannot be loaded here; the message says why and how to get it."""


def optional(module: str) -> ModuleType:
    """Import *module*, or raise Unavailable naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(
            f"{module} is not installed: pip install -r benchmarks/requirements.txt"
        ) from exc


def xlocal05() -> ModuleType:
    """Import xlocal 0.5 from PEERS_DIR as the module ``xlocal05``."""
    loaded = sys.modules.get("xlocal05")
    if loaded is not None:
        return loaded
    path = PEERS_DIR / "xlocal.py"
    spec = importlib.util.spec_from_file_location("xlocal05", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise Unavailable(
            f"xlocal 0.5 is not installed in {PEERS_DIR}: python -m benchmarks --setup"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules["xlocal05"] = module
    spec.loader.exec_module(module)
    return module


def pure_core() -> ModuleType:
    """xlocal's pure-Python core, loaded beside the one in use: ``xlocal._pure._core``.

    With the compiled core in use, this is a second copy of ``xlocal/_core.py`` and the
    rooms it imports, loaded as if ``XLOCAL_NO_EXTENSIONS`` were set into the package
    ``xlocal._pure`` (made here over the same files), so that both cores are timed in
    one process; with the pure core in use, it is that core.
    """
    import xlocal  # noqa: PLC0415 - the peers import nothing until used

    if xlocal.IMPLEMENTATION == "python":
        return importlib.import_module("xlocal._core")
    loaded = sys.modules.get("xlocal._pure._core")
    if loaded is not None:
        return loaded
    package = ModuleType("xlocal._pure")
    package.__path__ = [str(Path(xlocal.__file__).parent)]
    package.__package__ = "xlocal._pure"
    sys.modules["xlocal._pure"] = package
    saved = os.environ.get("XLOCAL_NO_EXTENSIONS")
    os.environ["XLOCAL_NO_EXTENSIONS"] = "1"
    try:
        module = importlib.import_module("xlocal._pure._core")
    finally:
        if saved is None:
            del os.environ["XLOCAL_NO_EXTENSIONS"]
        else:
            os.environ["XLOCAL_NO_EXTENSIONS"] = saved
    assert module.IMPLEMENTATION == "python"
    return module


def install(requirements: bool = True) -> None:
    """Install the benchmark requirements, then xlocal 0.5 into PEERS_DIR."""
    pip = [sys.executable, "-m", "pip", "install"]
    if requirements:
        subprocess.run([*pip, "-r", str(HERE / "requirements.txt")], check=True)
    subprocess.run(
        [*pip, "--no-deps", "--upgrade", "--target", str(PEERS_DIR), "xlocal==0.5"],
        check=True,
    )
