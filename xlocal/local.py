"""A werkzeug.local-compatible layer on contextvars: Local, LocalStack, LocalProxy.

``from werkzeug.local import Local, LocalProxy`` can become
``from xlocal.local import Local, LocalProxy``.  These are the old-style *mutable*
per-execution stores: set an attribute, and the current thread, greenlet or asyncio task
sees it until it is deleted or released.  The xlocal core, whose bindings end with their
with-block, stays the recommended way; a :class:`LocalProxy` (or :func:`proxy`) to an
xlocal name gives both worlds one face.

Storage: each Local or LocalStack owns one ContextVar holding a dict or a list.  A write
never mutates the stored container; it copies it and sets the copy, so a context copied
before the write (an asyncio task, ``Context.run``) keeps what it saw.  When a store
becomes empty in the execution that filled it, the variable is reset with the token of
the write that filled it, so an empty Local or LocalStack stores nothing at all.
"""

from __future__ import annotations

import contextvars
import copy
import math
import operator
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial, update_wrapper
from operator import attrgetter
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    NoReturn,
    TypeVar,
    Union,
    cast,
    overload,
)

from ._core import _call_form, _label, _var, xlocal

if TYPE_CHECKING:
    from .wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "Local",
    "LocalManager",
    "LocalProxy",
    "LocalStack",
    "proxy",
    "release_local",
]

T = TypeVar("T")

#: The single wording of this module's deprecation warnings.
_DEPRECATED = "{what} is deprecated and ignored: {why}; {instead}"

#: What an unset variable reads as.  Never stored and never mutated.
_NO_VALUES: dict[str, Any] = {}
_NO_ITEMS: list[Any] = []


class _Values(dict[str, Any]):
    """The dict a Local stores; remembers the token that undoes its first write."""

    #: Never changed in place (writes copy, then set): the spawn helpers carry it.
    __xlocal_carried__ = True

    __slots__ = ("_reset",)
    _reset: contextvars.Token[Any] | None


class _Items(list[Any]):
    """The list a LocalStack stores; remembers the token that undoes its first push."""

    #: Never changed in place (pushes copy, then set): the spawn helpers carry it.
    __xlocal_carried__ = True

    __slots__ = ("_reset",)
    _reset: contextvars.Token[Any] | None


def _store(var: contextvars.ContextVar[Any], old: Any, new: _Values | _Items) -> None:
    """Set *new* as the non-empty successor of *old*, keeping the way back to empty."""
    if old:
        new._reset = getattr(old, "_reset", None)
    else:
        new._reset = var.set(new)
        return
    var.set(new)


def _empty(var: contextvars.ContextVar[Any], old: Any, empty: type[Any]) -> None:
    """Make the store empty: unset the variable if this execution filled it."""
    token = getattr(old, "_reset", None)
    if token is not None:
        try:
            var.reset(token)
        except (ValueError, RuntimeError):
            pass  # filled in another Context (copied into this one): set empty below
        else:
            return
    if old:
        var.set(empty())


class Local:
    """A namespace of attributes per thread, greenlet and asyncio task.

    Set, read and delete attributes as on any object; each execution sees only its own.
    Reading a missing attribute raises AttributeError, so ``getattr(local, name, None)``
    works.  An asyncio task starts with a snapshot of its creator's attributes; later
    writes on either side are not seen by the other.

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
        if name[:2] != "__":
            values = _storage(self).get(_NO_VALUES)
            try:
                return values[name]
            except KeyError:
                pass
        else:
            try:
                return object.__getattribute__(self, name)
            except AttributeError:
                values = _storage(self).get(_NO_VALUES)
                if name in values:
                    return values[name]
        error = AttributeError(
            f"{name!r} is not set on {self!r} in this execution: set it first, "
            f"or read it with getattr(local, {name!r}, default)"
        )
        error.name = name
        error.obj = self
        raise error

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

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        """Iterate over ``(name, value)`` for the current execution's attributes."""
        return iter(_storage(self).get(_NO_VALUES).items())

    def __call__(
        self, name: str, *, unbound_message: str | None = None
    ) -> LocalProxy[Any]:
        """Return a :class:`LocalProxy` to attribute *name* of this Local."""
        return LocalProxy(self, name, unbound_message=unbound_message)

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
        """Put *obj* on top of the current execution's stack; return the new stack."""
        old = self._storage.get(_NO_ITEMS)
        new = _Items(old)
        new.append(obj)
        _store(self._storage, old, new)
        return new

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

    def __release_local__(self) -> None:
        _empty(self._storage, self._storage.get(_NO_ITEMS), list)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {id(self):#x}>"


def release_local(local: Local | LocalStack[Any]) -> None:
    """Drop everything the current execution stored in *local*.

    Works for :class:`Local` and :class:`LocalStack`, not for a proxy: keep a reference
    to the store itself.

    .. versionadded:: 1.0
    """
    release = getattr(type(local), "__release_local__", None)
    if release is None:
        raise TypeError(
            f"cannot release {type(local).__name__} objects: release_local() takes a "
            f"Local or LocalStack (for a proxy, release the store it proxies)"
        )
    release(local)


_Releasable = Union[Local, LocalStack[Any]]


class LocalManager:
    """Release several Locals and LocalStacks at once, typically after each request.

    :param locals: a Local or LocalStack, or an iterable of them; more can be appended
        to the ``locals`` list later.
    :param ident_func: werkzeug 0.x's way of making locals greenlet-aware.  Accepted
        and ignored with a DeprecationWarning: contextvars isolate threads, greenlets
        and asyncio tasks without it.

    .. versionadded:: 1.0
    """

    __slots__ = ("locals",)

    locals: list[_Releasable]

    def __init__(
        self,
        locals: _Releasable | Iterable[_Releasable] | None = None,
        ident_func: Callable[[], Any] | None = None,
    ) -> None:
        if ident_func is not None:
            warnings.warn(
                _DEPRECATED.format(
                    what="LocalManager(ident_func=...)",
                    why=(
                        "xlocal.local keeps its data in contextvars, which isolate "
                        "threads, greenlets and asyncio tasks by themselves"
                    ),
                    instead="remove the argument",
                ),
                DeprecationWarning,
                stacklevel=2,
            )
        if locals is None:
            self.locals = []
        elif isinstance(locals, (Local, LocalStack)):
            self.locals = [locals]
        else:
            self.locals = list(locals)

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
        """Release the current execution's data in all managed locals."""
        for local in self.locals:
            release_local(local)

    def make_middleware(self, app: WSGIApplication) -> WSGIApplication:
        """Wrap a WSGI app: the locals are released once its response is closed."""
        from .wsgi import ClosingIterable  # noqa: PLC0415 - .wsgi imports this module

        def application(
            environ: WSGIEnvironment, start_response: StartResponse
        ) -> Iterable[bytes]:
            try:
                response = app(environ, start_response)
            except BaseException:
                self.cleanup()
                raise
            return ClosingIterable(response, self.cleanup)

        return application

    def middleware(self, func: WSGIApplication) -> WSGIApplication:
        """Like :meth:`make_middleware`, as a decorator that keeps *func*'s metadata."""
        return update_wrapper(self.make_middleware(func), func)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} storages: {len(self.locals)}>"


def _run_all(callbacks: list[Callable[[], Any]]) -> None:
    """Call each of *callbacks*; re-raise the first error once all have run."""
    error: BaseException | None = None
    for callback in callbacks:
        try:
            callback()
        except BaseException as exc:  # re-raised below
            if error is None:
                error = exc
    if error is not None:
        raise error


def _releaser(
    locals: Iterable[Local | LocalStack[Any] | LocalManager],
) -> Callable[[], None]:
    """Return a function that releases *locals*; a manager, all it holds by then."""
    calls: list[Callable[[], Any]] = [
        local.cleanup
        if isinstance(local, LocalManager)
        else partial(release_local, local)
        for local in locals
    ]

    def release() -> None:
        _run_all(calls)

    return release


def _middleware_setup(
    x: xlocal,
    own: str | None,
    what: str,
    factories: Mapping[str, Callable[..., Any]] | None,
    locals: Iterable[Local | LocalStack[Any] | LocalManager],
) -> tuple[dict[str, Callable[..., Any]], Callable[[], None]]:
    """Check the arguments of a WSGI or ASGI middleware, once, when it is made.

    *own* is the name the middleware binds the *what* (environ, scope) under.  Returns
    the factories and the function that releases *locals* after each request.
    """
    if not isinstance(x, xlocal):
        raise TypeError(
            f"XlocalMiddleware binds on an xlocal, not on a {type(x).__name__}"
        )
    made = dict(factories or {})
    if own in made:
        raise ValueError(
            f"cannot bind {own!r} twice: it is both the {what}'s name and a factory's"
        )
    x(**dict.fromkeys([*made, *([own] if own else [])]))  # checks the names now
    return made, _releaser(locals)


# -- LocalProxy ----------------------------------------------------------------------


class _Forward:
    """Forward one special method of :class:`LocalProxy` to the current object.

    :param op: the function the operation is redone with on the object (``repr``,
        ``operator.add``, ...); without it, the method is looked up on the object.
    :param fallback: what the method does when the proxy is unbound, instead of raising
        the proxy's RuntimeError; it takes the proxy.
    """

    __slots__ = ("_fallback", "_name", "_op")

    def __init__(
        self,
        op: Callable[..., Any] | None = None,
        fallback: Callable[[LocalProxy[Any]], Any] | None = None,
    ) -> None:
        self._op = op
        self._fallback = fallback

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    def __get__(self, proxy: LocalProxy[Any] | None, owner: type[Any] | None) -> Any:
        if proxy is None:
            return self
        try:
            obj = _get_current(proxy)()
        except RuntimeError as error:
            if self._fallback is None:
                # Raise when called, not here: CPython turns an error raised while it
                # looks up __hash__, __iter__ or __eq__ into "unhashable", "not
                # iterable" or an identity comparison, which would hide the message.
                return partial(_raise, error)
            return partial(self._fallback, proxy)
        if self._op is None:
            return getattr(obj, self._name)
        return partial(self._op, obj)

    def __call__(self, proxy: LocalProxy[Any], *args: Any, **kwargs: Any) -> Any:
        # Reached through the class, as copy.copy does: type(x).__copy__(x).
        return self.__get__(proxy, type(proxy))(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<forwarded {self._name}>"


class _Attribute(_Forward):
    """Forward an attribute that is a value (``__class__``, ``__doc__``)."""

    __slots__ = ("_class_value",)

    def __init__(
        self, fallback: Callable[[LocalProxy[Any]], Any], class_value: Any = None
    ) -> None:
        super().__init__(None, fallback)
        self._class_value = class_value

    def __get__(self, proxy: LocalProxy[Any] | None, owner: type[Any] | None) -> Any:
        if proxy is None:
            return self if self._class_value is None else self._class_value
        try:
            obj = _get_current(proxy)()
        except RuntimeError:
            return self._fallback(proxy)  # type: ignore[misc]
        return getattr(obj, self._name)


class _InPlace(_Forward):
    """Forward an in-place operator such as ``+=``, rebinding as Python would.

    If the object changed in place (the operator returned the object itself), the
    proxy is returned, so the name it was assigned to stays a proxy.  Otherwise (an
    immutable object) the new value is returned and the name is rebound to it, as
    ``x = x + y`` would; the proxied object is left as it was.
    """

    __slots__ = ()

    def __get__(self, proxy: LocalProxy[Any] | None, owner: type[Any] | None) -> Any:
        if proxy is None:
            return self
        try:
            obj = _get_current(proxy)()
        except RuntimeError as error:
            return partial(_raise, error)
        op = cast("Callable[[Any, Any], Any]", self._op)

        def in_place(other: Any) -> Any:
            result = op(obj, other)
            return proxy if result is obj else result

        return in_place


def _raise(error: BaseException, *args: Any, **kwargs: Any) -> NoReturn:
    raise error


def _swapped(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Turn ``op(a, b)`` into the reflected ``op(b, a)``."""

    def reflected(obj: Any, other: Any) -> Any:
        return op(other, obj)

    return reflected


def _call(obj: Any, *args: Any, **kwargs: Any) -> Any:
    return obj(*args, **kwargs)


def _unbound_repr(proxy: LocalProxy[Any]) -> str:
    return f"<{type(proxy).__name__} unbound>"


class LocalProxy(Generic[T]):
    """A stand-in that forwards every operation to the object it resolves to.

    It resolves at each use, in the current execution, from:

    - a :class:`Local` and an attribute name: ``LocalProxy(local, "user")``, also
      made by ``local("user")``;
    - a :class:`LocalStack`: its top item, also made by ``stack()``;
    - a ``ContextVar``: its value;
    - an :class:`~xlocal.xlocal` and a name: ``LocalProxy(xcurrent, "request")``, the
      name as bound by the innermost ``with xcurrent(request=...)``;
    - a callable: what it returns.

    With a source other than a Local or an xlocal, *name* proxies that attribute of
    the resolved object.  When there is nothing to resolve to, operations raise
    RuntimeError with *unbound_message*; ``repr`` then says unbound and ``bool`` is
    False.  ``repr``, ``str``, ``==``, ``hash`` and ``__class__`` are forwarded, so
    ``isinstance(proxy, Request)`` holds; use ``type(x) is LocalProxy`` or
    ``issubclass(type(x), LocalProxy)`` to recognise a proxy.
    ``_get_current_object()`` returns the object itself.

    .. versionadded:: 1.0
    """

    __slots__ = ("_LocalProxy__source", "_get_current_object")

    _get_current_object: Callable[[], T]

    # For type checkers: a proxy to the source's own value has the value's type; a
    # proxy to a name (an attribute, a Local's or an xlocal's) is LocalProxy[Any].
    @overload
    def __init__(
        self,
        local: LocalStack[T],
        name: None = None,
        *,
        unbound_message: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        local: contextvars.ContextVar[T] | Callable[[], T],
        name: None = None,
        *,
        unbound_message: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: LocalProxy[Any],
        local: contextvars.ContextVar[Any]
        | Local
        | LocalStack[Any]
        | xlocal
        | Callable[[], Any],
        name: str,
        *,
        unbound_message: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        local: contextvars.ContextVar[T]
        | Local
        | LocalStack[T]
        | xlocal
        | Callable[[], T],
        name: str | None = None,
        *,
        unbound_message: str | None = None,
    ) -> None:
        get_current: Callable[[], Any]
        if isinstance(local, xlocal):
            get_current = _from_xlocal(local, name, unbound_message)
        elif isinstance(local, Local):
            get_current = _from_local(local, name, unbound_message)
        elif isinstance(local, LocalStack):
            get_current = _from_stack(local, name, unbound_message)
        elif isinstance(local, contextvars.ContextVar):
            get_current = _from_var(local, name, unbound_message)
        elif callable(local):
            get_current = _then(local, name)
        else:
            raise TypeError(
                f"cannot proxy a {type(local).__name__} object: LocalProxy takes a "
                f"Local, LocalStack, ContextVar, xlocal or a callable"
            )
        object.__setattr__(self, "_LocalProxy__source", local)
        object.__setattr__(self, "_get_current_object", get_current)

    def __getattribute__(self, name: str) -> Any:
        # Faster than __getattr__, which Python reaches only after a failed lookup.
        if name in _OWN:
            return object.__getattribute__(self, name)
        return getattr(_get_current(self)(), name)

    # The table of forwarded special methods.  Python looks them up on the type, so
    # each is a descriptor that resolves the proxy first; a fallback says what an
    # unbound proxy does instead of raising.
    __doc__ = _Attribute(lambda p: type(p).__doc__, class_value=__doc__)
    __wrapped__ = _Attribute(
        lambda p: object.__getattribute__(p, "_LocalProxy__source")
    )
    __class__ = _Attribute(type)
    __repr__ = _Forward(repr, _unbound_repr)
    __str__ = _Forward(str)
    __bytes__ = _Forward(bytes)
    __format__ = _Forward(format)
    __hash__ = _Forward(hash)
    __bool__ = _Forward(bool, lambda p: False)
    __dir__ = _Forward(dir, lambda p: [])
    __setattr__ = _Forward(setattr)
    __delattr__ = _Forward(delattr)
    # Attribute reads go through __getattribute__ below, not __getattr__.  Not
    # forwarded: __slots__ and __dict__ of the proxy itself, the descriptor protocol
    # (__get__, __set__, __delete__, __set_name__: a proxy stored on a class stays a
    # proxy), metaclass hooks (__init_subclass__, __prepare__; __class_getitem__ goes
    # through __getitem__ of the object), __del__ (deleting the proxy must not touch the
    # object).  Pickling needs no entry: pickle reads __reduce_ex__ as an attribute, so
    # it pickles the object, not the proxy.
    __lt__ = _Forward(operator.lt)
    __le__ = _Forward(operator.le)
    __eq__ = _Forward(operator.eq)
    __ne__ = _Forward(operator.ne)
    __gt__ = _Forward(operator.gt)
    __ge__ = _Forward(operator.ge)
    __instancecheck__ = _Forward(lambda cls, obj: isinstance(obj, cls))
    __subclasscheck__ = _Forward(lambda cls, sub: issubclass(sub, cls))
    __call__ = _Forward(_call)
    __len__ = _Forward(len)
    __length_hint__ = _Forward(operator.length_hint)
    __getitem__ = _Forward(operator.getitem)
    __setitem__ = _Forward(operator.setitem)
    __delitem__ = _Forward(operator.delitem)
    __iter__ = _Forward(iter)
    __next__ = _Forward(next)
    __reversed__ = _Forward(reversed)
    __contains__ = _Forward(operator.contains)
    __add__ = _Forward(operator.add)
    __sub__ = _Forward(operator.sub)
    __mul__ = _Forward(operator.mul)
    __matmul__ = _Forward(operator.matmul)
    __truediv__ = _Forward(operator.truediv)
    __floordiv__ = _Forward(operator.floordiv)
    __mod__ = _Forward(operator.mod)
    __divmod__ = _Forward(divmod)
    __pow__ = _Forward(pow)
    __lshift__ = _Forward(operator.lshift)
    __rshift__ = _Forward(operator.rshift)
    __and__ = _Forward(operator.and_)
    __xor__ = _Forward(operator.xor)
    __or__ = _Forward(operator.or_)
    __radd__ = _Forward(_swapped(operator.add))
    __rsub__ = _Forward(_swapped(operator.sub))
    __rmul__ = _Forward(_swapped(operator.mul))
    __rmatmul__ = _Forward(_swapped(operator.matmul))
    __rtruediv__ = _Forward(_swapped(operator.truediv))
    __rfloordiv__ = _Forward(_swapped(operator.floordiv))
    __rmod__ = _Forward(_swapped(operator.mod))
    __rdivmod__ = _Forward(_swapped(divmod))
    __rpow__ = _Forward(_swapped(pow))
    __rlshift__ = _Forward(_swapped(operator.lshift))
    __rrshift__ = _Forward(_swapped(operator.rshift))
    __rand__ = _Forward(_swapped(operator.and_))
    __rxor__ = _Forward(_swapped(operator.xor))
    __ror__ = _Forward(_swapped(operator.or_))
    __iadd__ = _InPlace(operator.iadd)
    __isub__ = _InPlace(operator.isub)
    __imul__ = _InPlace(operator.imul)
    __imatmul__ = _InPlace(operator.imatmul)
    __itruediv__ = _InPlace(operator.itruediv)
    __ifloordiv__ = _InPlace(operator.ifloordiv)
    __imod__ = _InPlace(operator.imod)
    __ipow__ = _InPlace(operator.ipow)
    __ilshift__ = _InPlace(operator.ilshift)
    __irshift__ = _InPlace(operator.irshift)
    __iand__ = _InPlace(operator.iand)
    __ixor__ = _InPlace(operator.ixor)
    __ior__ = _InPlace(operator.ior)
    __neg__ = _Forward(operator.neg)
    __pos__ = _Forward(operator.pos)
    __abs__ = _Forward(abs)
    __invert__ = _Forward(operator.invert)
    __complex__ = _Forward(complex)
    __int__ = _Forward(int)
    __float__ = _Forward(float)
    __index__ = _Forward(operator.index)
    __round__ = _Forward(round)
    __trunc__ = _Forward(math.trunc)
    __floor__ = _Forward(math.floor)
    __ceil__ = _Forward(math.ceil)
    __enter__ = _Forward()
    __exit__ = _Forward()
    __await__ = _Forward()
    __aiter__ = _Forward()
    __anext__ = _Forward()
    __aenter__ = _Forward()
    __aexit__ = _Forward()
    __copy__ = _Forward(copy.copy)
    __deepcopy__ = _Forward(copy.deepcopy)


#: The proxy's own attributes; all others are read from the current object.
_OWN = frozenset(
    {
        "_get_current_object",
        "_LocalProxy__source",
        "__class__",
        "__doc__",
        "__wrapped__",
    }
)
_get_current: Callable[[LocalProxy[Any]], Callable[[], Any]]
_get_current = LocalProxy.__dict__["_get_current_object"].__get__


def proxy(source: xlocal, name: str, *, unbound_message: str | None = None) -> Any:
    """Return a proxy to the value bound to *name* on the xlocal *source*.

    The proxy resolves at each use, so it can be made once at module level::

        request: Request = proxy(xcurrent, "request")

    It reserves no name on *source*: every name stays free to bind.  This is
    ``LocalProxy(source, name)``, typed as ``Any`` so that it can be annotated with
    the proxied type.

    .. versionadded:: 1.0
    """
    if not isinstance(source, xlocal):
        raise TypeError(
            f"proxy() takes an xlocal and a name, not {type(source).__name__}; for "
            f"other sources use LocalProxy"
        )
    return LocalProxy(source, name, unbound_message=unbound_message)


def _split(name: str) -> tuple[str, Callable[[Any], Any] | None]:
    head, dot, rest = name.partition(".")
    return head, attrgetter(rest) if dot else None


def _then(get: Callable[[], Any], name: str | None) -> Callable[[], Any]:
    """Resolve with *get*, then take attribute *name* (dotted) if there is one."""
    if name is None:
        return get
    attribute = attrgetter(name)

    def get_current() -> Any:
        return attribute(get())

    return get_current


def _from_xlocal(
    x: xlocal, name: str | None, unbound_message: str | None
) -> Callable[[], Any]:
    if not isinstance(name, str):
        raise TypeError(
            f"a proxy to {_label(x)} needs the name to proxy, as in "
            f"`LocalProxy({_call_form(x)}, 'request')`"
        )
    head, rest = _split(name)
    if head[:1] == "_" or not head.isidentifier():
        raise ValueError(
            f"cannot proxy {head!r} on {_label(x)}: only names that can be bound "
            f"(identifiers not starting with '_') can be proxied"
        )
    message = unbound_message or (
        f"{head!r} is not bound on {_label(x)} in this execution: use the proxy "
        f"inside `with {_call_form(x)}({head}=...)`"
    )
    get = _var(x).get

    def get_current() -> Any:
        try:
            return get()[head]
        except KeyError:
            raise RuntimeError(message) from None

    return get_current if rest is None else _then(get_current, name.partition(".")[2])


def _from_local(
    local: Local, name: str | None, unbound_message: str | None
) -> Callable[[], Any]:
    if not isinstance(name, str):
        raise TypeError(
            f"a proxy to {local!r} needs the attribute name to proxy, as in "
            f"`local('user')`"
        )
    head, rest = _split(name)
    message = unbound_message or (
        f"{head!r} is not set on {local!r} in this execution: set it before using "
        f"the proxy"
    )
    get = _storage(local).get

    def get_current() -> Any:
        try:
            return get(_NO_VALUES)[head]
        except KeyError:
            raise RuntimeError(message) from None

    return get_current if rest is None else _then(get_current, name.partition(".")[2])


def _from_stack(
    stack: LocalStack[Any], name: str | None, unbound_message: str | None
) -> Callable[[], Any]:
    message = unbound_message or (
        f"{stack!r} is empty in this execution: push an object before using the proxy"
    )
    get = stack._storage.get

    def get_current() -> Any:
        items = get(_NO_ITEMS)
        if not items:
            raise RuntimeError(message)
        return items[-1]

    return _then(get_current, name)


def _from_var(
    var: contextvars.ContextVar[Any], name: str | None, unbound_message: str | None
) -> Callable[[], Any]:
    message = unbound_message or (
        f"ContextVar {var.name!r} has no value in this execution: set it before "
        f"using the proxy"
    )
    get = var.get

    def get_current() -> Any:
        try:
            return get()
        except LookupError:
            raise RuntimeError(message) from None

    return _then(get_current, name)
