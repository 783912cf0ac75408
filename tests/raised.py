"""What the tests read from errors that xlocal raises together."""

from __future__ import annotations

import sys


def every_error(raised: BaseException) -> list[str]:
    """Each error raised together (``xlocal._middleware.raise_all``), in its order,
    as ``"Type: message"``: a group's from Python 3.11, a chain of contexts before."""
    if sys.version_info >= (3, 11):
        assert isinstance(raised, BaseExceptionGroup)  # noqa: F821 - builtin from 3.11
        errors = list(raised.exceptions)
        assert raised.message == f"{len(errors)} errors, in the order they were raised"
    else:  # pragma: no cover - coverage is measured on 3.11
        errors = []
        error: BaseException | None = raised
        while error is not None:
            errors.append(error)
            error = error.__context__
        errors.reverse()
    return [f"{type(error).__name__}: {error}" for error in errors]
