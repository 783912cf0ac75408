"""What the tests read from errors that xlocal raises together."""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # pragma: no cover - coverage is measured on 3.11+
    from exceptiongroup import BaseExceptionGroup


def every_error(raised: BaseException) -> list[str]:
    """Each error raised together (``xlocal._middleware.raise_all``), in its order,
    as ``"Type: message"``."""
    assert isinstance(raised, BaseExceptionGroup)
    errors = list(raised.exceptions)
    assert raised.message == f"{len(errors)} errors, in the order they were raised"
    return [f"{type(error).__name__}: {error}" for error in errors]
