"""A function and its submitter's portable bindings, as Dask runs it on a worker.

Apart from :mod:`xlocal.dask`, so that ``xlocal.dask.Client`` (in ``_dask_client``,
which imports distributed) and the rest of ``xlocal.dask`` both build on it without
importing each other.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Callable

from ._engines import hidden
from .portable import CARRIER_KEY, extract, inject

__all__ = ["Carried", "carried"]


class Carried:
    """A function and the portable bindings of its submitter, to run on a worker.

    Calling it runs the function in a copy of the worker's context (Dask keeps the
    worker there) where every xlocal binding is hidden and the carried ones are bound
    by a with-block; nothing it binds outlives the call.  It keeps the function's name
    (a partial's function's) and docstring, and tokenizes as the function and the
    carrier.

    .. versionadded:: 1.0
    """

    def __init__(self, func: Callable[..., Any], carrier: Mapping[str, str]) -> None:
        functools.update_wrapper(self, func)
        if "__name__" not in vars(self):
            # Dask names a partial's task by its function; so does this.
            inner = func
            while isinstance(inner, functools.partial):
                inner = inner.func
            name = getattr(inner, "__name__", None)
            if isinstance(name, str):
                self.__name__ = name
        self._func = func
        self._carrier = dict(carrier)

    @property
    def carrier(self) -> Mapping[str, str]:
        """The carrier, read-only."""
        return MappingProxyType(self._carrier)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return contextvars.copy_context().run(self._run, args, kwargs)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with hidden(), extract(self._carrier):
            return self._func(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return Carried, (self._func, self._carrier)

    def __dask_tokenize__(self) -> object:
        from dask.base import normalize_token  # noqa: PLC0415 - only Dask calls this

        return (
            "xlocal.dask.Carried",
            normalize_token(self._func),
            self._carrier.get(CARRIER_KEY),
        )

    def __repr__(self) -> str:
        return f"<Carried {self._func!r}>"


def carried(func: Callable[..., Any]) -> Carried:
    """Return *func* with the portable bindings in force now, for Dask to run.

    An unencodable value raises :class:`~xlocal.portable.UnportableError` here.  A
    function that is already carried is carried again with the bindings of now.

    .. versionadded:: 1.0
    """
    if not callable(func):
        raise TypeError(
            f"xlocal.dask needs a callable to submit, not {type(func).__name__}"
        )
    if isinstance(func, Carried):
        func = func._func
    return Carried(func, inject())
