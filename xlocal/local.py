"""A werkzeug.local-compatible layer on contextvars: Local, LocalStack, LocalManager.

``from werkzeug.local import Local, LocalProxy`` can become
``from xlocal.local import Local, LocalProxy``.  These are the old-style *mutable*
per-execution stores: set an attribute, and the current thread, greenlet or asyncio task
sees it until it is deleted or released.  The xlocal core, whose bindings end with their
with-block, stays the recommended way; a :class:`~xlocal.proxy.LocalProxy` (or
:func:`~xlocal.proxy.proxy`) to an xlocal name gives both worlds one face.  Both live
in :mod:`xlocal.proxy` and are importable from here, as from werkzeug.local.

Storage: each Local or LocalStack owns one ContextVar holding a dict or a list.  A write
never mutates the stored container; it copies it and sets the copy, so a context copied
before the write (an asyncio task, ``Context.run``) keeps what it saw.  An emptied
store is set to a shared empty value, as werkzeug does; keeping the token that could
reset it would tie the data to its context in a cycle, and a dead thread's data would
wait for the garbage collector instead of going with the thread.
"""

from __future__ import annotations

import contextvars
import copy  # noqa: F401 - werkzeug.local's namespace, see below
import math  # noqa: F401
import operator  # noqa: F401
import sys
import threading
import typing as t  # noqa: F401
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar as ContextVar  # noqa: PLC0414 - exported
from functools import partial, update_wrapper
from operator import attrgetter  # noqa: F401
from typing import Any, Generic, TypeVar, cast

from ._middleware import (
    ClosingIterable,
    Releasable,
    StartResponse,
    WSGIApplication,
    WSGIEnvironment,
    run_all,
    stores,
)
from ._middleware import ClosingIterator as ClosingIterator  # noqa: PLC0414
from .proxy import LocalProxy, _then, proxy

# werkzeug.local has no __all__: code imports any name of its namespace.  Besides the
# API below, werkzeug 2.x and 3.x hold ContextVar (Flask 2.0 imports it from there),
# ClosingIterator, get_ident (2.0, deprecated), the type variables F and T, and the
# standard-library names marked "noqa: F401" above; so they are here too.  ContextVar
# and ClosingIterator, which code does import, are re-exported for type checkers too.

__all__ = [
    "Local",
    "LocalManager",
    "LocalProxy",
    "LocalStack",
    "proxy",
    "release_local",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: The single wording of this module's deprecation warnings.
_DEPRECATED = "{what} is deprecated: {why}; {instead}"

#: What an empty store reads as: set when a store is emptied, never mutated.
_NO_VALUES: dict[str, Any] = {}
_NO_ITEMS: list[Any] = []


class _Values(dict[str, Any]):
    """The dict a Local stores: never changed in place (writes copy, then set)."""

    #: The spawn helpers carry it.
    __xlocal_carried__ = True

    __slots__ = ()


class _Items(list[Any]):
    """The list a LocalStack stores: never changed in place (pushes copy, then set)."""

    #: The spawn helpers carry it.
    __xlocal_carried__ = True

    __slots__ = ()


def _store(var: contextvars.ContextVar[Any], old: Any, new: _Values | _Items) -> None:
    """Set *new* as the successor of *old*."""
    var.set(new)


def _empty(var: contextvars.ContextVar[Any], old: Any, empty: type[Any]) -> None:
    """Make the store empty in this execution.

    The variable is set to the shared empty value, not reset with a token: a token
    kept in the data would tie the data to its context in a cycle (context, data,
    token, context), and a dead thread's data would wait for the garbage collector.
    """
    if old:
        var.set(_NO_VALUES if empty is dict else _NO_ITEMS)


class Local:
    """A namespace of attributes per thread, greenlet and asyncio task.

    Set, read and delete attributes as on any object; each execution sees only its own.
    Reading a missing attribute raises AttributeError, so ``getattr(local, name, None)``
    works.  An asyncio task starts with a snapshot of its creator's attributes; later
    writes on either side are not seen by the other.  What an execution sets stays
    until it is deleted or released, or the execution ends: a pool thread that runs
    one task after another keeps it from one task to the next, as with werkzeug
    (``xlocal.ContextExecutor`` and the middleware keep tasks and requests apart).

    :param context_var: a ``ContextVar`` holding a dict, to keep the data in; by
        default the Local makes its own.  A dict in a variable you pass is replaced,
        never mutated.

    .. versionadded:: 1.0
    """

    __slots__ = ("__storage",)

    def __init__(
        self, context_var: contextvars.ContextVar[dict[str, Any]] | None = None
    ) -> None:
        if context_var is None:
            context_var = contextvars.ContextVar(f"xlocal.Local<{id(self):#x}>")
        elif not isinstance(context_var, contextvars.ContextVar):
            raise TypeError(
                f"Local(context_var=...) takes a contextvars.ContextVar holding a "
                f"dict, not {type(context_var).__name__}"
            )
        object.__setattr__(self, "_Local__storage", context_var)

    def __getattribute__(self, name: str) -> Any:
        if name[:2] != "__":  # Local has no such attribute of its own: data only
            try:
                return _storage(self).get(_NO_VALUES)[name]
            except KeyError:
                return _data(self, name)  # raises the error that says what to do
        try:
            return object.__getattribute__(self, name)
        except AttributeError:
            return _data(self, name)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass's methods, properties and class attributes are found before its
        # data, as with werkzeug's Local, whose data is only reached by __getattr__.
        super().__init_subclass__(**kwargs)
        if cls.__getattribute__ is Local.__getattribute__:  # not one of its own
            cls.__getattribute__ = _class_first  # type: ignore[method-assign]

    def __setattr__(self, name: str, value: Any) -> None:
        var = _storage(self)
        old = var.get(_NO_VALUES)
        new = _Values(old)
        new[name] = value
        _store(var, old, new)

    def __delattr__(self, name: str) -> None:
        var = _storage(self)
        old = var.get(_NO_VALUES)
        if name not in old:
            error = AttributeError(
                f"cannot delete {name!r} on {self!r}: it is not set in this execution"
            )
            error.name = name
            error.obj = self
            raise error
        if len(old) == 1:
            _empty(var, old, dict)
            return
        new = _Values(old)
        del new[name]
        _store(var, old, new)

    @property
    def __ident_func__(self) -> Callable[[], Any]:
        """werkzeug 2.0's identity function (deprecated): see :func:`get_ident`."""
        _warn_identity("__ident_func__", depth=1)  # read through __getattribute__
        return _identity_function()

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        """Iterate over ``(name, value)`` for the current execution's attributes."""
        return iter(_storage(self).get(_NO_VALUES).items())

    def __call__(
        self, name: str, *, unbound_message: str | None = None
    ) -> LocalProxy[Any]:
        """Return a :class:`LocalProxy` to attribute *name* of this Local."""
        return LocalProxy(self, name, unbound_message=unbound_message)

    def __proxy_getter__(
        self, name: str | None, unbound_message: str | None
    ) -> Callable[[], Any]:
        """Return what resolves ``LocalProxy(self, name)``: the attribute *name*."""
        if not isinstance(name, str):
            raise TypeError(
                f"a proxy to {self!r} needs the attribute name to proxy, as in "
                f"`local('user')`"
            )
        head, _, rest = name.partition(".")
        message = unbound_message or (
            f"{head!r} is not set on {self!r} in this execution: set it before using "
            f"the proxy"
        )
        get = _storage(self).get

        def get_current() -> Any:
            try:
                return get(_NO_VALUES)[head]
            except KeyError:
                raise RuntimeError(message) from None

        return _then(get_current, rest or None)

    def __release_local__(self) -> None:
        var = _storage(self)
        _empty(var, var.get(_NO_VALUES), dict)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {id(self):#x}>"

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"cannot copy or pickle {self!r}: its data belongs to the executions "
            f"that set it; share the Local itself"
        )


def _class_first(local: Local, name: str) -> Any:
    """A subclass's ``__getattribute__``: its class's attribute, else its data."""
    try:
        return object.__getattribute__(local, name)
    except AttributeError:
        return _data(local, name)


def _data(local: Local, name: str) -> Any:
    """Read *name* from *local*'s data in the current execution."""
    try:
        return _storage(local).get(_NO_VALUES)[name]
    except KeyError:
        pass
    error = AttributeError(
        f"{name!r} is not set on {local!r} in this execution: set it first, "
        f"or read it with getattr(local, {name!r}, default)"
    )
    error.name = name
    error.obj = local
    raise error


#: ``_storage(local)`` is the Local's ContextVar, read straight from its slot.
_storage: Callable[[Local], contextvars.ContextVar[dict[str, Any]]]
_storage = Local.__dict__["_Local__storage"].__get__


class LocalStack(Generic[T]):
    """A stack of objects per thread, greenlet and asyncio task.

    ``push`` and ``pop`` change the current execution's stack only; ``top`` is its last
    item, or None when it is empty.  An empty stack stores nothing.  Calling the stack
    gives a :class:`LocalProxy` to its top (or to an attribute of the top).

    :param context_var: a ``ContextVar`` holding a list, to keep the stack in; by
        default the stack makes its own.  A list in a variable you pass is replaced,
        never mutated.

    .. versionadded:: 1.0
    """

    __slots__ = ("_storage",)

    _storage: contextvars.ContextVar[list[T]]

    def __init__(
        self, context_var: contextvars.ContextVar[list[T]] | None = None
    ) -> None:
        if context_var is None:
            context_var = contextvars.ContextVar(f"xlocal.LocalStack<{id(self):#x}>")
        elif not isinstance(context_var, contextvars.ContextVar):
            raise TypeError(
                f"LocalStack(context_var=...) takes a contextvars.ContextVar holding "
                f"a list, not {type(context_var).__name__}"
            )
        self._storage = context_var

    def push(self, obj: T) -> list[T]:
        """Put *obj* on top of the current execution's stack; return the new stack.

        The list returned is a copy: changing it does not change the stack.
        """
        old = self._storage.get(_NO_ITEMS)
        new = _Items(old)
        new.append(obj)
        _store(self._storage, old, new)
        return list(new)

    def pop(self) -> T | None:
        """Remove the top item and return it; None if the stack is empty."""
        old = self._storage.get(_NO_ITEMS)
        if not old:
            return None
        if len(old) == 1:
            _empty(self._storage, old, list)
        else:
            _store(self._storage, old, _Items(old[:-1]))
        top: T = old[-1]
        return top

    @property
    def top(self) -> T | None:
        """The top item of the current execution's stack; None if it is empty."""
        stack = self._storage.get(_NO_ITEMS)
        return stack[-1] if stack else None

    def __call__(
        self, name: str | None = None, *, unbound_message: str | None = None
    ) -> LocalProxy[Any]:
        """Return a :class:`LocalProxy` to the top item, or to its attribute *name*."""
        return LocalProxy(self, name, unbound_message=unbound_message)

    def __proxy_getter__(
        self, name: str | None, unbound_message: str | None
    ) -> Callable[[], T]:
        """Return what resolves ``LocalProxy(self, name)``: the top, or its *name*."""
        empty = unbound_message or (
            f"{self!r} is empty in this execution: push an object before using the "
            f"proxy"
        )
        none = unbound_message or (
            f"the top of {self!r} is None in this execution, which a proxy treats as "
            f"empty (as werkzeug's does): push an object before using the proxy"
        )
        get = self._storage.get

        def get_current() -> T:
            items = get(_NO_ITEMS)
            if not items:
                raise RuntimeError(empty)
            top: T | None = items[-1]
            if top is None:
                raise RuntimeError(none)
            return top

        return _then(get_current, name)

    @property
    def __ident_func__(self) -> Callable[[], Any]:
        """werkzeug 2.0's identity function (deprecated): see :func:`get_ident`."""
        _warn_identity("__ident_func__")
        return _identity_function()

    @__ident_func__.setter
    def __ident_func__(self, func: Callable[[], Any]) -> None:
        _warn_identity("setting __ident_func__ (it has no effect)")

    def __release_local__(self) -> None:
        _empty(self._storage, self._storage.get(_NO_ITEMS), list)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {id(self):#x}>"

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"cannot copy or pickle {self!r}: its data belongs to the executions "
            f"that pushed it; share the LocalStack itself"
        )


def release_local(local: Releasable) -> None:
    """Drop everything the current execution stored in *local*.

    Works for :class:`Local` and :class:`LocalStack` (and a :class:`LocalManager`: all
    it manages), not for a proxy: keep a reference to the store itself.

    .. versionadded:: 1.0
    """
    release = getattr(type(local), "__release_local__", None)
    if release is None:
        raise TypeError(
            f"cannot release {type(local).__name__} objects: release_local() takes a "
            f"Local, LocalStack or LocalManager (for a proxy, release the store it "
            f"proxies)"
        )
    release(local)


class LocalManager:
    """Release several Locals and LocalStacks at once, typically after each request.

    :param locals: a Local, LocalStack or LocalManager, or an iterable of them;
        checked at once.  More can be appended to the ``locals`` list later.
    :param ident_func: werkzeug 0.x's way of making locals greenlet-aware.  Accepted
        and ignored with a DeprecationWarning: contextvars isolate threads, greenlets
        and asyncio tasks without it.

    .. versionadded:: 1.0
    """

    __slots__ = ("locals",)

    locals: list[Releasable]

    def __init__(
        self,
        locals: Releasable | Iterable[Releasable] | None = None,
        ident_func: Callable[[], Any] | None = None,
    ) -> None:
        if ident_func is not None:
            warnings.warn(
                _DEPRECATED.format(
                    what="LocalManager(ident_func=...)",
                    why=(
                        "it is ignored, as xlocal.local keeps its data in "
                        "contextvars, which isolate threads, greenlets and asyncio "
                        "tasks by themselves"
                    ),
                    instead="remove the argument",
                ),
                DeprecationWarning,
                stacklevel=2,
            )
        self.locals = (
            [] if locals is None else stores(locals, "LocalManager(locals=...)")
        )

    def get_ident(self) -> tuple[int, ...]:
        """Return a hashable identity of the current thread, greenlet and asyncio task.

        The locals do not use it: their data lives in contextvars.  It is there to key
        other per-execution registries alongside them (as werkzeug 0.x documented,
        e.g. SQLAlchemy's ``scoped_session(scopefunc=manager.get_ident)``).  It is
        ``(thread id, id of the greenlet, id of the asyncio task)``, the last two only
        where greenlet or asyncio is imported and running; like thread ids, the values
        may be reused once an execution has ended.  Unlike the locals, it does not tell
        apart copies of a context run with ``Context.run`` in one thread.
        """
        ident = [threading.get_ident()]
        greenlet = sys.modules.get("greenlet")
        if greenlet is not None:
            ident.append(id(greenlet.getcurrent()))
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None:
            try:
                task = asyncio.current_task()
            except RuntimeError:  # no running event loop in this thread
                task = None
            if task is not None:
                ident.append(id(task))
        return tuple(ident)

    def cleanup(self) -> None:
        """Release the current execution's data in all managed locals.

        Each is released even if releasing one before it raised; once all have been
        tried, an error is raised as it is, and several together, in an
        ``ExceptionGroup``.
        """
        run_all(self._releases())

    def _releases(self) -> list[Callable[[], None]]:
        return [partial(release_local, local) for local in self.locals]

    def __release_local__(self) -> None:
        """Release all managed locals: a manager is released as its locals are."""
        self.cleanup()

    def make_middleware(self, app: WSGIApplication) -> WSGIApplication:
        """Wrap a WSGI app: the locals are released once its response is closed."""
        if not callable(app):
            raise TypeError(
                f"make_middleware() takes the WSGI application to wrap, a callable, "
                f"not {type(app).__name__}"
            )

        def application(
            environ: WSGIEnvironment, start_response: StartResponse
        ) -> Iterable[bytes]:
            try:
                response = app(environ, start_response)
            except BaseException as error:
                run_all(self._releases(), error)
                raise
            return ClosingIterable(response, *self._releases())

        return application

    def middleware(self, func: WSGIApplication) -> WSGIApplication:
        """Like :meth:`make_middleware`, as a decorator that keeps *func*'s metadata."""
        return update_wrapper(self.make_middleware(func), func)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} storages: {len(self.locals)}>"


def get_ident() -> Any:
    """Return werkzeug 2.0's identity of the current greenlet or thread (deprecated).

    The current greenlet where greenlet is installed, else the thread's id, as
    ``werkzeug.local.get_ident`` returned; it warns with a DeprecationWarning, as
    werkzeug 2.0 did.  Nothing in xlocal uses it.

    .. versionadded:: 1.0
    """
    _warn_identity("get_ident()")
    return _identity_function()()


def _identity_function() -> Callable[[], Any]:
    """werkzeug 2.0's identity function: greenlet's getcurrent, or the thread's id."""
    try:
        from greenlet import getcurrent  # noqa: PLC0415 - only where it is installed
    except ImportError:
        return threading.get_ident
    return cast("Callable[[], Any]", getcurrent)


def _warn_identity(what: str, depth: int = 0) -> None:
    """Warn that werkzeug 2.0's identity function *what* is deprecated.

    *depth* counts the frames between the public function or property and its caller
    (Local.__getattribute__ is one).
    """
    warnings.warn(
        _DEPRECATED.format(
            what=what,
            why="xlocal.local keeps its data in contextvars and needs no identity",
            instead=(
                "use greenlet.getcurrent() or threading.get_ident() as werkzeug 2.0 "
                "did, or LocalManager().get_ident(), which tells asyncio tasks apart"
            ),
        ),
        DeprecationWarning,
        stacklevel=3 + depth,
    )
