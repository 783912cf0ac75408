"""Carry portable bindings with Dask tasks: ``xlocal.dask.Client`` and ``delayed``.

Dask has no hook around the call of a task on the worker, so the submitting side wraps
the function: :class:`Carried` holds the function and the carrier that
:func:`xlocal.portable.inject` made at submit time, pickles as the two, and on the
worker runs the function inside a with-block of the carried bindings, with the rest of
xlocal's own state hidden (other bindings, ``Local`` and ``LocalStack`` data).  The
carrier is part of the wrapper's Dask token, so a pure call made under different
bindings gets another key (Dask would otherwise give it the result of the first),
while the key keeps the function's name.

- :class:`Client` is a ``distributed.Client`` whose ``submit`` and ``map`` carry.
- :func:`delayed` is ``dask.delayed`` for functions: each call carries the bindings in
  force at that call.
- :func:`get_client` and :func:`worker_client`, inside a task, give the worker's client
  with ``submit`` and ``map`` that carry (``distributed.get_client()`` gives a plain
  one, which does not).

A coroutine function stays one to distributed, whose worker awaits it: each of its
steps runs in the carried bindings, in a context of its own.  What Dask would not
await (an object with an ``async def __call__``, a generator or async generator
function) is refused with ``TypeError`` when it is submitted.

Carriers are signed with the key of the submitting process, its
``XLOCAL_DASK_SIGNING_KEY`` environment variable (its UTF-8 bytes), or the
``signing_key=`` given to each of the above; a worker whose environment has the
variable refuses a carrier that is unsigned, changed or signed with another key (than
it, or the older keys its ``XLOCAL_DASK_OLD_SIGNING_KEYS`` lists while keys are
rotated), so the task fails with :class:`~xlocal.portable.CarrierError` before its
function runs.  The key never travels with a task.

Dask and distributed are imported only when these are used.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, overload

from ._dask_task import Carried, carried, check_key, runnable
from .portable import Key

if TYPE_CHECKING:
    from dask.delayed import Delayed

    from ._dask_client import Client

__all__ = ["Carried", "Client", "carried", "delayed", "get_client", "worker_client"]

# Shown, documented and pickled under their public home.
Carried.__module__ = carried.__module__ = __name__


@overload
def delayed(
    func: Callable[..., Any],
    /,
    *,
    signing_key: Key | None = None,
    **options: Any,
) -> Callable[..., Delayed]: ...


@overload
def delayed(
    func: None = None, /, *, signing_key: Key | None = None, **options: Any
) -> Callable[[Callable[..., Any]], Callable[..., Delayed]]: ...


def delayed(
    func: Any = None, /, *, signing_key: Key | None = None, **options: Any
) -> Any:
    """``dask.delayed`` for a function, carrying the bindings in force at each call.

    ``delayed(func, **options)(*args)`` is ``dask.delayed(func, **options)(*args)``,
    a ``Delayed``, whose task runs *func* with the portable bindings in force when it
    was called.  It decorates too, with or without options (``@delayed``,
    ``@delayed(pure=True)``).  *options* are ``dask.delayed``'s (``name``, ``pure``,
    ``nout``, ``traverse``).  The graph computes with ``client.compute``,
    ``dask.compute`` or ``.compute()`` alike.  A coroutine function is awaited by
    distributed's workers; Dask's local schedulers give the coroutine, as they do for
    plain ``dask.delayed``.  Each call's carrier is signed with *signing_key*, or
    the process's ``XLOCAL_DASK_SIGNING_KEY`` (see :func:`carried`).

    .. versionadded:: 1.0
    """
    if signing_key is not None:
        check_key(signing_key)
    if func is None:
        return functools.partial(delayed, signing_key=signing_key, **options)
    if not callable(func):
        raise TypeError(
            f"xlocal.dask.delayed() takes a function, not {type(func).__name__}: "
            f"use dask.delayed for other objects"
        )
    runnable(func)

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        from dask.delayed import delayed as dask_delayed  # noqa: PLC0415 - only here

        task = carried(func, signing_key=signing_key)
        return dask_delayed(task, **options)(*args, **kwargs)

    return call


class _Carrying:
    """The worker's client, whose ``submit`` and ``map`` carry; the rest is its own."""

    __slots__ = ("_client", "_signing_key")

    def __init__(self, client: Any, signing_key: Key | None = None) -> None:
        self._client = client
        self._signing_key = signing_key

    def submit(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        task = carried(func, signing_key=self._signing_key)
        return self._client.submit(task, *args, **kwargs)

    def map(self, func: Callable[..., Any], *iterables: Any, **kwargs: Any) -> Any:
        task = carried(func, signing_key=self._signing_key)
        return self._client.map(task, *iterables, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"<carrying {self._client!r}>"


def get_client(*args: Any, signing_key: Key | None = None, **kwargs: Any) -> Any:
    """``distributed.get_client()``, whose ``submit`` and ``map`` carry.

    Their carriers are signed with *signing_key*, or the process's
    ``XLOCAL_DASK_SIGNING_KEY``: on a worker, the key it checks carriers with.

    .. versionadded:: 1.0
    """
    if signing_key is not None:
        check_key(signing_key)
    import distributed  # noqa: PLC0415

    return _Carrying(distributed.get_client(*args, **kwargs), signing_key)


@contextlib.contextmanager
def worker_client(
    *args: Any, signing_key: Key | None = None, **kwargs: Any
) -> Iterator[Any]:
    """``distributed.worker_client()``, whose ``submit`` and ``map`` carry.

    Their carriers are signed as :func:`get_client`'s are.

    .. versionadded:: 1.0
    """
    if signing_key is not None:
        check_key(signing_key)
    import distributed  # noqa: PLC0415

    with distributed.worker_client(*args, **kwargs) as client:
        yield _Carrying(client, signing_key)


def __getattr__(name: str) -> Any:
    # Client subclasses distributed.Client: made when first asked for.
    if name == "Client":
        from ._dask_client import Client  # noqa: PLC0415

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
