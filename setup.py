"""Build the optional compiled core, xlocal._cxlocal; metadata is in pyproject.toml.

The extension is optional: where it cannot be compiled (no C compiler, PyPy), the
package installs with its pure-Python core, which is the specification of the compiled
one and behaves the same.  ``XLOCAL_REQUIRE_EXTENSIONS=1`` at build time makes a failed
compile an error instead (CI, wheels).
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from typing import Any

from setuptools import Extension, setup
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


REQUIRED = _flag("XLOCAL_REQUIRE_EXTENSIONS")


class optional_build_ext(build_ext):  # noqa: N801 - a setuptools command name
    """build_ext that falls back to the pure core when compiling fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            self._give_up(error)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:
            self._give_up(error)

    def _give_up(self, error: Exception) -> None:
        if REQUIRED:
            raise error
        sys.stderr.write(
            f"note: xlocal's compiled core was not built ({error}); the pure-Python "
            f"core will be used\n"
        )


extensions = []
# CPython only; not its free-threaded build, for which the extension is not made.
if platform.python_implementation() == "CPython" and not sysconfig.get_config_var(
    "Py_GIL_DISABLED"
):
    extensions.append(Extension("xlocal._cxlocal", ["xlocal/_cxlocal.c"]))

setup(ext_modules=extensions, cmdclass={"build_ext": optional_build_ext})
