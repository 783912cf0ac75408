"""The codec protocol: how a portable xlocal's values become text and back.

It lives below the core, which takes ``codec=`` when an xlocal is made, and below
``xlocal.portable``, which uses it and re-exports it as ``xlocal.portable.Codec``.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Codec"]


class Codec(Protocol):
    """What ``xlocal(..., codec=...)`` takes: values to strings and back.

    .. versionadded:: 1.0
    """

    def encode(self, value: Any, /) -> str:
        """The value as text; raise TypeError or ValueError for one it cannot take."""

    def decode(self, text: str, /) -> Any:
        """The value back from text that :meth:`encode` made."""
