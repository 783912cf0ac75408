"""Building the package: the compiled core, the visible fallback to the pure one.

The build tests build real wheels from a copy of the source (never from the checkout,
which they leave as it is) with setuptools' PEP 517 hook, the one pip calls, in a
virtual environment of their own with setuptools from the package registry; they
install the wheels into fresh virtual environments and import them there.  They take
about twenty seconds, most of it installing setuptools once.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import types
import zipfile
from pathlib import Path
from typing import Any

import pytest

from xlocal._environment import _load_extension, _warn_pure_core

#: The checkout or the unpacked sdist the tests run from.
ROOT = Path(__file__).resolve().parent.parent

#: What a build needs from the source tree, beside the package.
BUILD_FILES = [
    "setup.py",
    "pyproject.toml",
    "setup.cfg",
    "MANIFEST.in",
    "README.txt",
    "LICENSE",
    "CHANGELOG",
]

#: Variables of the caller that would change what a build or an import does.
OURS = [
    "XLOCAL_REQUIRE_EXTENSIONS",
    "XLOCAL_STRICT_BUILD",
    "XLOCAL_NO_EXTENSIONS",
    "XLOCAL_EXPECT_IMPLEMENTATION",
    "XLOCAL_DEBUG",
    "PYTHONPATH",
    "CC",
]

#: The warning's text up to its reason, which varies.
WARNING = (
    "RuntimeWarning: xlocal uses its pure-Python core, slower than the compiled one"
)

#: How to fix it: the end of every warning.
FIX = (
    ": install a C compiler and the Python headers (for example `apt-get install gcc "
    "python3-dev`) and reinstall xlocal with `pip install --force-reinstall "
    "--no-cache-dir xlocal`, or set XLOCAL_NO_EXTENSIONS=1 to choose the pure core "
    "without this warning"
)

building = pytest.mark.skipif(
    sys.platform == "win32"
    or bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    or not (ROOT / "setup.py").is_file(),
    reason="builds on POSIX, on a CPython with the GIL, from a source tree",
)


def _compiler() -> str | None:
    """The C compiler that builds extensions for this Python, if it is installed."""
    cc = sysconfig.get_config_var("CC") or ""
    return shutil.which(shlex.split(cc)[0]) if cc else None


needs_compiler = pytest.mark.skipif(
    _compiler() is None, reason="needs the C compiler this Python was built with"
)


def _environment(**changes: str) -> dict[str, str]:
    """The environment without our switches, with *changes*."""
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    return {**env, **changes}


def _run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=_environment(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


class Builder:
    """Builds wheels from copies of the source, with a setuptools of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = root / "setuptools" / "bin" / "python"
        self.made = 0
        _make_venv(root / "setuptools")
        installed = _run([*_pip(self.python), "install", "-q", "setuptools>=77"], root)
        assert installed.returncode == 0, installed.stderr

    def build(self, patch: str = "", **env: str) -> tuple[Path | None, str]:
        """Build a wheel from a fresh copy of the source, with *patch* appended to the
        C file and *env* set; give the wheel (None if the build failed) and the
        build's output."""
        self.made += 1
        source = self.root / f"source-{self.made}"
        source.mkdir()
        for name in BUILD_FILES:
            shutil.copy2(ROOT / name, source / name)
        shutil.copytree(
            ROOT / "xlocal",
            source / "xlocal",
            ignore=shutil.ignore_patterns(
                "__pycache__", "*.so", "*.pyd", "_build_note.py"
            ),
        )
        with (source / "xlocal" / "_cxlocal.c").open("a") as c:
            c.write(patch)
        out = self.root / f"wheels-{self.made}"
        hook = (
            "import sys; from setuptools import build_meta; "
            "print(build_meta.build_wheel(sys.argv[1]))"
        )
        built = _run([str(self.python), "-c", hook, str(out)], source, **env)
        output = built.stdout + built.stderr
        if built.returncode != 0:
            return None, output
        return out / built.stdout.strip().splitlines()[-1], output

    def install(self, wheel: Path) -> Path:
        """A fresh virtual environment with *wheel* installed, its python."""
        self.made += 1
        venv = self.root / f"venv-{self.made}"
        _make_venv(venv)
        python = venv / "bin" / "python"
        # With its dependencies: before Python 3.11, the exceptiongroup backport.
        installed = _run([*_pip(python), "install", "-q", str(wheel)], self.root)
        assert installed.returncode == 0, installed.stderr
        return python


def _make_venv(path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)],
        check=True,
        timeout=120,
    )


def _pip(python: Path) -> list[str]:
    """This environment's pip, acting on the environment of *python*."""
    return [sys.executable, "-m", "pip", "--python", str(python)]


def _import(python: Path, cwd: Path, **env: str) -> tuple[str, str]:
    """Import xlocal with *python*, every warning shown each time it is made: what it
    prints (its IMPLEMENTATION) and its standard error."""
    ran = _run(
        [
            str(python),
            "-W",
            "always",
            "-c",
            "import xlocal, xlocal.local; print(xlocal.IMPLEMENTATION)",
        ],
        cwd,
        **env,
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip(), ran.stderr


def _contents(wheel: Path) -> dict[str, str]:
    """The names in *wheel*, with the text of its WHEEL file and build note."""
    with zipfile.ZipFile(wheel) as archive:
        return {
            name: archive.read(name).decode()
            if name.endswith(("/WHEEL", "/_build_note.py"))
            else ""
            for name in archive.namelist()
        }


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> Builder:
    """One builder for the module: its setuptools is installed once."""
    return Builder(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def pure_build(builder: Builder) -> tuple[Path, str]:
    """A wheel built where the C compiler fails (CC=false), and the build's output."""
    wheel, output = builder.build(CC="false")
    assert wheel is not None, output
    return wheel, output


@pytest.fixture(scope="module")
def pure_python(builder: Builder, pure_build: tuple[Path, str]) -> Path:
    """The python of a fresh environment with the pure-core wheel installed."""
    return builder.install(pure_build[0])


@building
@pytest.mark.cpython_only("the compiled core is built on CPython only")
def test_a_failed_compile_makes_a_pure_wheel(pure_build: tuple[Path, str]) -> None:
    """A build whose compiler fails says why, and makes a wheel tagged pure, without
    the extension, holding the note of why."""
    wheel, output = pure_build
    assert "note: xlocal's compiled core was not built (" in output
    assert wheel.name.endswith("-py3-none-any.whl")
    contents = _contents(wheel)
    assert not [name for name in contents if name.endswith((".so", ".pyd"))]
    (info,) = [text for name, text in contents.items() if name.endswith("/WHEEL")]
    assert "Root-Is-Purelib: true" in info
    assert "Tag: py3-none-any" in info
    note = types.ModuleType("note")
    exec(contents["xlocal/_build_note.py"], note.__dict__)
    assert note.REASON.startswith("compiling it failed: ")
    assert "false" in note.REASON  # the compiler named: 'false', or /usr/bin/false
    assert len(note.REASON) <= len("compiling it failed: ") + 200


@building
@pytest.mark.cpython_only("the compiled core is built on CPython only")
def test_the_pure_wheel_warns_once_at_import(pure_python: Path, tmp_path: Path) -> None:
    """Installed, the wheel without the extension runs the pure core and warns once,
    at import, saying why and how to fix it."""
    implementation, stderr = _import(pure_python, tmp_path)
    assert implementation == "python"
    assert stderr.count("RuntimeWarning") == 1, stderr
    # Shown at the line of xlocal/_environment.py that loads the core.
    assert "/xlocal/_environment.py:" in stderr.split(": RuntimeWarning")[0]
    assert stderr.rstrip().endswith("_cxlocal = _load_extension()"), stderr
    assert (
        f"{WARNING}, because xlocal._cxlocal was not built when xlocal was installed "
        f"(compiling it failed: "
    ) in stderr
    assert FIX in stderr


@building
@pytest.mark.cpython_only("the compiled core is built on CPython only")
def test_asking_for_the_pure_core_silences_the_warning(
    pure_python: Path, tmp_path: Path
) -> None:
    """XLOCAL_NO_EXTENSIONS=1 chooses the pure core: no warning."""
    implementation, stderr = _import(pure_python, tmp_path, XLOCAL_NO_EXTENSIONS="1")
    assert (implementation, stderr) == ("python", "")


@building
@needs_compiler
@pytest.mark.cpython_only("the compiled core is built on CPython only")
def test_a_compiled_wheel_is_tagged_for_its_cpython(
    builder: Builder, tmp_path: Path
) -> None:
    """A build that compiles the extension makes a wheel tagged for this CPython, its
    ABI and platform, holding the extension and no note; installed, it runs the
    compiled core without a warning."""
    wheel, output = builder.build(XLOCAL_REQUIRE_EXTENSIONS="1")
    assert wheel is not None, output
    version = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert wheel.name.endswith(f"-{version}-{version}{sys.abiflags}-{platform}.whl"), (
        wheel.name
    )
    contents = _contents(wheel)
    assert f"xlocal/_cxlocal{sysconfig.get_config_var('EXT_SUFFIX')}" in contents
    assert "xlocal/_build_note.py" not in contents
    assert _import(builder.install(wheel), tmp_path) == ("c", "")


@building
@needs_compiler
@pytest.mark.cpython_only("the compiled core is built on CPython only")
def test_a_strict_build_makes_warnings_errors(builder: Builder) -> None:
    """XLOCAL_STRICT_BUILD=1 adds -Wall -Wextra -Werror to the extension's compile
    command, after the interpreter's flags (its optimisation kept), and a compile
    that fails on a warning fails the build rather than falling back."""
    probe = "\nstatic int xlocal_strict_probe(int unused) { return 0; }\n"
    wheel, output = builder.build(probe, XLOCAL_STRICT_BUILD="1")
    assert wheel is None, output
    assert "xlocal_strict_probe" in output
    assert "unused-parameter" in output
    (command,) = [
        line.split()
        for line in output.splitlines()
        if "-c xlocal/_cxlocal.c" in line and not line.startswith("error")
    ]
    assert command[-3:] == ["-Wall", "-Wextra", "-Werror"]
    assert [flag for flag in command if flag.startswith("-O")]


def _warning(error: ImportError) -> str:
    with pytest.warns(RuntimeWarning) as caught:
        _warn_pure_core(error)
    (warning,) = caught
    return str(warning.message)


def _missing() -> ModuleNotFoundError:
    return ModuleNotFoundError(
        "No module named 'xlocal._cxlocal'", name="xlocal._cxlocal"
    )


def test_the_warning_gives_the_reason_the_build_noted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing extension of a build that fell back: the warning gives the reason
    that the build noted, and how to fix it."""
    note = types.ModuleType("xlocal._build_note")
    note.REASON = "compiling it failed: no compiler"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "xlocal._build_note", note)
    assert _warning(_missing()) == (
        "xlocal uses its pure-Python core, slower than the compiled one, because "
        "xlocal._cxlocal was not built when xlocal was installed (compiling it "
        f"failed: no compiler){FIX}"
    )


def test_the_warning_without_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing extension and no note (a copy never built): the warning says so."""
    monkeypatch.setitem(sys.modules, "xlocal._build_note", None)
    assert _warning(_missing()) == (
        "xlocal uses its pure-Python core, slower than the compiled one, because "
        f"xlocal._cxlocal is not installed (this copy of xlocal was not built){FIX}"
    )


def test_the_warning_for_an_extension_that_does_not_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An extension that is there but does not load: the warning gives the error,
    whatever a note says, and a missing module other than the extension is such an
    error too."""
    note = types.ModuleType("xlocal._build_note")
    monkeypatch.setitem(sys.modules, "xlocal._build_note", note)
    broken = ImportError("undefined symbol: PyFoo")
    assert _warning(broken) == (
        "xlocal uses its pure-Python core, slower than the compiled one, because "
        f"xlocal._cxlocal failed to load (ImportError: undefined symbol: PyFoo){FIX}"
    )
    other = ModuleNotFoundError("No module named 'foo'", name="foo")
    assert "failed to load (ModuleNotFoundError: No module named 'foo')" in _warning(
        other
    )


def test_the_warning_with_a_note_without_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A note without its reason (written by another version) does not fail the
    import."""
    monkeypatch.setitem(
        sys.modules, "xlocal._build_note", types.ModuleType("xlocal._build_note")
    )
    assert "installed (no reason recorded)" in _warning(_missing())


def test_the_loader_warns_where_the_import_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a CPython with the GIL, the loader whose import of the compiled core fails
    gives None and warns, for the line that called it; elsewhere it gives None
    silently."""
    monkeypatch.delenv("XLOCAL_NO_EXTENSIONS", raising=False)
    monkeypatch.setitem(sys.modules, "xlocal._cxlocal", None)
    monkeypatch.setitem(sys.modules, "xlocal._build_note", None)
    if sys.implementation.name != "cpython" or sysconfig.get_config_var(
        "Py_GIL_DISABLED"
    ):
        assert _load_extension() is None
        return
    with pytest.warns(RuntimeWarning, match="is not installed") as caught:
        assert _load_extension() is None
    assert [w.filename for w in caught] == [__file__]


def test_no_warning_on_a_free_threaded_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A free-threaded CPython, for which setup.py makes no extension, does not
    warn."""
    variables: dict[str, Any] = {"Py_GIL_DISABLED": 1}
    monkeypatch.setattr(sysconfig, "get_config_var", variables.get)
    _warn_pure_core(_missing())  # filterwarnings = error: a warning fails


def test_the_import_warns_where_the_extension_is_missing() -> None:
    """On CPython, importing xlocal with its extension missing warns; elsewhere, or
    with XLOCAL_NO_EXTENSIONS=1, it does not."""
    code = (
        "import sys, warnings; sys.modules['xlocal._cxlocal'] = None; "
        "warnings.simplefilter('error'); import xlocal; print(xlocal.IMPLEMENTATION)"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLOCAL_NO_EXTENSIONS"}

    def run(**changes: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            env={**env, **changes},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ran = run()
    if sys.implementation.name == "cpython" and not sysconfig.get_config_var(
        "Py_GIL_DISABLED"
    ):
        assert ran.returncode != 0
        assert "RuntimeWarning: xlocal uses its pure-Python core" in ran.stderr
    else:
        assert (ran.returncode, ran.stdout) == (0, "python\n"), ran.stderr
    quiet = run(XLOCAL_NO_EXTENSIONS="1")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "python\n", "")
