"""Record the public names of werkzeug.local, and Flask's imports from it, per version.

Run by hand when a new werkzeug or Flask release should be covered::

    python tests/data/record_werkzeug.py > tests/data/werkzeug_local.json

Each version is installed with pip into a throwaway directory and inspected in a
subprocess; nothing is installed into the running environment.  The JSON maps each
werkzeug version to its ``__all__`` (None: werkzeug.local has none) and to every name
of its module namespace not starting with ``_``, with where the object comes from:
``module:NAME`` for a module, ``TypeVar`` for a type variable, ``MODULE.QUALNAME`` for a
class or function, ``MODULE.NAME`` for another object.  For each Flask version, it
lists the names Flask's own modules import from werkzeug.local.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WERKZEUG = ["2.0.3", "2.1.2", "2.2.3", "2.3.8", "3.0.6", "3.1.9"]
FLASK = ["2.0.0", "2.0.3", "2.3.3", "3.1.3"]

_INSPECT = """
import json, types, typing
import werkzeug.local as module
names = {}
for name in sorted(vars(module)):
    if name.startswith("_"):
        continue
    obj = getattr(module, name)
    if isinstance(obj, types.ModuleType):
        names[name] = "module:" + obj.__name__
    elif isinstance(obj, typing.TypeVar):
        names[name] = "TypeVar"
    elif hasattr(obj, "__qualname__"):
        names[name] = obj.__module__ + "." + obj.__qualname__
    else:
        names[name] = type(obj).__module__ + "." + name
print(json.dumps({"__all__": getattr(module, "__all__", None), "names": names}))
"""


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "-q", *args], check=True, stdout=sys.stderr
    )


def werkzeug_names(version: str) -> object:
    """Install werkzeug *version* in a temporary directory; inspect werkzeug.local."""
    with tempfile.TemporaryDirectory() as target:
        _pip("install", "--target", target, f"werkzeug=={version}")
        out = subprocess.run(
            [sys.executable, "-c", _INSPECT],
            env={"PYTHONPATH": target},
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
    return json.loads(out)


def flask_imports(version: str) -> list[str]:
    """Download Flask *version* and list what its modules import from werkzeug.local."""
    names: set[str] = set()
    with tempfile.TemporaryDirectory() as directory:
        _pip("download", "--no-deps", "-d", directory, f"flask=={version}")
        (wheel,) = Path(directory).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if not member.endswith(".py"):
                    continue
                tree = ast.parse(archive.read(member))
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and (
                        node.module == "werkzeug.local"
                    ):
                        names.update(alias.name for alias in node.names)
    return sorted(names)


def main() -> None:
    record = {
        "werkzeug": {version: werkzeug_names(version) for version in WERKZEUG},
        "flask": {version: flask_imports(version) for version in FLASK},
    }
    json.dump(record, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
