"""``xlocal.dask.Client``: apart, because defining it imports distributed."""

from __future__ import annotations

from typing import Any, Callable

import distributed

from ._dask_task import carried, check_key
from .portable import Key

__all__ = ["Client"]


class Client(distributed.Client):
    """A ``distributed.Client`` whose ``submit`` and ``map`` carry portable bindings.

    Each task runs with the portable bindings in force where it was submitted (see
    :mod:`xlocal.dask`); everything else is ``distributed.Client``'s.  A value that
    cannot be encoded raises in ``submit`` or ``map``.  Their carriers are signed
    with *signing_key* (bytes, or a sequence whose first signs), or else with the
    process's key, its
    ``XLOCAL_DASK_SIGNING_KEY`` environment variable, if set.

    .. versionadded:: 1.0
    """

    _xlocal_signing_key: Key | None = None

    def __init__(
        self, *args: Any, signing_key: Key | None = None, **kwargs: Any
    ) -> None:
        if signing_key is not None:
            check_key(signing_key)
        self._xlocal_signing_key = signing_key
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    def submit(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        task = carried(func, signing_key=self._xlocal_signing_key)
        return super().submit(task, *args, **kwargs)

    def map(self, func: Callable[..., Any], *iterables: Any, **kwargs: Any) -> Any:
        task = carried(func, signing_key=self._xlocal_signing_key)
        return super().map(task, *iterables, **kwargs)


Client.__module__ = "xlocal.dask"
