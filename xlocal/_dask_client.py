"""``xlocal.dask.Client``: apart, because defining it imports distributed."""

from __future__ import annotations

from typing import Any, Callable

import distributed

from ._dask_task import carried

__all__ = ["Client"]


class Client(distributed.Client):
    """A ``distributed.Client`` whose ``submit`` and ``map`` carry portable bindings.

    Each task runs with the portable bindings in force where it was submitted (see
    :mod:`xlocal.dask`); everything else is ``distributed.Client``'s.  A value that
    cannot be encoded raises in ``submit`` or ``map``.

    .. versionadded:: 1.0
    """

    def submit(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return super().submit(carried(func), *args, **kwargs)

    def map(self, func: Callable[..., Any], *iterables: Any, **kwargs: Any) -> Any:
        return super().map(carried(func), *iterables, **kwargs)


Client.__module__ = "xlocal.dask"
