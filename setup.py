"""Build the optional compiled core, xlocal._cxlocal; metadata is in pyproject.toml.

The extension is optional: where it cannot be compiled (no C compiler, PyPy), the
package installs with its pure-Python core, which is the specification of the compiled
one and behaves the same.  A build that falls back says so: it writes
xlocal/_build_note.py with the reason, from which xlocal warns at import, and its wheel
is tagged pure (``py3-none-any``), not for the CPython it was built on.
``XLOCAL_REQUIRE_EXTENSIONS=1`` at build time makes a failed compile an error instead
(CI, wheels).  ``XLOCAL_STRICT_BUILD=1`` compiles the extension with
``-Wall -Wextra -Werror`` (CI), and makes a failed compile an error too.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from typing import Any

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext


def _flag(variable: str) -> bool:
    value = os.environ.get(variable, "")
    setting = value.strip().lower()
    if setting in ("", "0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    raise ValueError(
        f"{variable}={value!r} is not understood: set it to 1, true, yes or on, or to "
        f"0, false, no, off or nothing"
    )


STRICT = _flag("XLOCAL_STRICT_BUILD")
# A strict build is there to catch warnings: falling back to the pure core would hide
# them.
REQUIRED = _flag("XLOCAL_REQUIRE_EXTENSIONS") or STRICT

#: Added to the extension's own compile arguments by XLOCAL_STRICT_BUILD (not CFLAGS,
#: which would replace the interpreter's, -O2 or -O3 among them).
STRICT_ARGS = ["-Wall", "-Wextra", "-Werror"]

#: The module that a build which fell back to the pure core writes into the package,
#: for xlocal._core to warn from at import.  Not in the repository (.gitignore) nor in
#: the sdist (MANIFEST.in).
NOTE = "_build_note.py"


class optional_build_ext(build_ext):  # noqa: N801 - a setuptools command name
    """build_ext that falls back to the pure core when compiling fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            self._give_up(error)
        else:
            if self.extensions:
                self._write_note(None)

    def build_extension(self, ext: Any) -> None:
        if STRICT:
            if self.compiler.compiler_type == "msvc":
                raise RuntimeError(
                    "XLOCAL_STRICT_BUILD=1 knows the warning flags of gcc and clang "
                    "only, not MSVC's: unset it"
                )
            ext.extra_compile_args = [*ext.extra_compile_args, *STRICT_ARGS]
        try:
            super().build_extension(ext)
        except Exception as error:
            self._give_up(error)

    def _give_up(self, error: Exception) -> None:
        if REQUIRED:
            raise error
        if not self.extensions:  # given up already: run() sees the error again
            return
        sys.stderr.write(
            f"note: xlocal's compiled core was not built ({error}); the pure-Python "
            f"core will be used, and xlocal will warn at import\n"
        )
        # Build on without it: no extension to copy in place or to install, and a
        # pure wheel (tagged_bdist_wheel reads ext_modules after the build).
        self.extensions = []
        self.distribution.ext_modules = []
        reason = str(error) or type(error).__name__
        if len(reason) > 200:  # a compiler's whole command line, say
            reason = reason[:197] + "..."
        self._write_note(f"compiling it failed: {reason}")

    def _write_note(self, reason: str | None) -> None:
        """Write the note of a build that fell back, with *reason*, where the package
        is built and, for an in-place or editable build, into the source; None
        removes a note that an earlier build left."""
        package = self.get_finalized_command("build_py").get_package_dir("xlocal")
        places = [os.path.join(self.build_lib, "xlocal", NOTE)]
        if self.inplace or getattr(self, "editable_mode", False):
            places.append(os.path.join(package, NOTE))
        for path in places:
            if reason is None:
                if os.path.exists(path):
                    os.remove(path)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as note:
                note.write(
                    f'"""Written by setup.py: this build of xlocal fell back to the '
                    f'pure-Python core."""\n\nREASON = {reason!r}\n'
                )


class tagged_bdist_wheel(bdist_wheel):  # noqa: N801 - a setuptools command name
    """bdist_wheel whose tag says what the build made: pure (py3-none-any) when the
    compiled core fell back, for the CPython, ABI and platform when it holds it."""

    def run_command(self, command: str) -> None:
        super().run_command(command)
        if command == "build":
            # bdist_wheel decided before the build, from ext_modules, which a failed
            # compile empties; decide again before the files are laid out and tagged.
            self.root_is_pure = not (
                self.distribution.has_ext_modules()
                or self.distribution.has_c_libraries()
            )


extensions = []
# CPython only; not its free-threaded build, for which the extension is not made.
if platform.python_implementation() == "CPython" and not sysconfig.get_config_var(
    "Py_GIL_DISABLED"
):
    extensions.append(Extension("xlocal._cxlocal", ["xlocal/_cxlocal.c"]))

setup(
    ext_modules=extensions,
    cmdclass={"build_ext": optional_build_ext, "bdist_wheel": tagged_bdist_wheel},
)
