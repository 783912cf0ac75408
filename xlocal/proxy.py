"""LocalProxy: a stand-in that forwards every operation to an object found at each use.

``LocalProxy(source)`` resolves, in the current thread, greenlet or asyncio task, to
the object its source holds there: the value bound to a name on an xlocal, a
``ContextVar``'s value, what a callable returns, or what a store of
:mod:`xlocal.local` holds (a ``Local``'s attribute, a ``LocalStack``'s top).  Python
looks special methods up on the type, so the proxy forwards them through a table of
descriptors, each resolving the proxy first; a fallback says what an unbound proxy does
instead of raising.

A store tells the proxy how to read it: its type has
``__proxy_getter__(store, name, unbound_message)``, which returns the function that
resolves the proxy.  So this module knows no store class, and ``xlocal.local`` builds
its own proxies on it.
"""

from __future__ import annotations

import contextvars
import copy
import math
import operator
from collections.abc import Callable
from functools import partial
from operator import attrgetter
from typing import Any, Generic, NoReturn, Protocol, TypeVar, cast, overload

from ._core import xlocal
from ._errors import _call_form, _label
from ._frames import _var
from ._namespace import invalid_name

__all__ = ["LocalProxy", "proxy"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class ProxySource(Protocol[T_co]):
    """A store that a :class:`LocalProxy` can be made from (``Local``, ``LocalStack``).

    ``__proxy_getter__`` is looked up on the type and returns the function that
    resolves the proxy, raising RuntimeError (with *unbound_message* if given) when
    there is nothing to resolve to.
    """

    def __proxy_getter__(
        self, name: str | None, unbound_message: str | None
    ) -> Callable[[], T_co]: ...


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
    """A proxy that forwards every operation to the object it resolves to.

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
        local: ProxySource[T],
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
        | ProxySource[Any]
        | xlocal
        | Callable[[], Any],
        name: str,
        *,
        unbound_message: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        local: contextvars.ContextVar[T] | ProxySource[T] | xlocal | Callable[[], T],
        name: str | None = None,
        *,
        unbound_message: str | None = None,
    ) -> None:
        if isinstance(name, str) and "" in name.split("."):
            raise ValueError(
                f"cannot proxy {name!r}: a dotted name needs a name before, between "
                f"and after its dots, as in 'request.path'"
            )
        get_current: Callable[[], Any]
        getter = getattr(type(local), "__proxy_getter__", None)
        if isinstance(local, xlocal):
            get_current = _from_xlocal(local, name, unbound_message)
        elif getter is not None:  # a store: a Local, a LocalStack
            get_current = getter(local, name, unbound_message)
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
        try:
            obj = _get_current(self)()
        except RuntimeError:
            if name == "__module__":  # unbound: the proxy class's, as in werkzeug
                return type(self).__module__
            raise
        return getattr(obj, name)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # What a subclass defines (methods, properties, class attributes, its
        # docstring) is the proxy's own, as with werkzeug's LocalProxy, whose
        # forwarding starts only where normal lookup fails; the rest is forwarded.
        super().__init_subclass__(**kwargs)
        inherited = cls.__getattribute__
        if inherited is not LocalProxy.__getattribute__ and not getattr(
            inherited, "_forwards", False
        ):
            return  # the subclass, or one between, has a __getattribute__ of its own
        own = _OWN.union(
            *(
                vars(klass)
                for klass in cls.__mro__
                if issubclass(klass, LocalProxy) and klass is not LocalProxy
            )
        )
        forward = LocalProxy.__getattribute__

        def getattribute(self: LocalProxy[Any], name: str) -> Any:
            if name in own:
                return object.__getattribute__(self, name)
            return forward(self, name)

        getattribute._forwards = True  # type: ignore[attr-defined]
        cls.__getattribute__ = getattribute  # type: ignore[method-assign]

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        # Found through _OWN: pickle and copy read it from the instance, and must not
        # get the object's.  werkzeug's proxies cannot be pickled either.
        source = object.__getattribute__(self, "_LocalProxy__source")
        raise TypeError(
            f"cannot pickle a LocalProxy (of {source!r}): it stands for an object of "
            f"the execution that uses it; pickle proxy._get_current_object() to "
            f"pickle that object"
        )

    def __reduce__(self) -> NoReturn:
        self.__reduce_ex__(None)

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
    # Attribute reads go through __getattribute__ above, not __getattr__.  Not
    # forwarded: __slots__ and __dict__ of the proxy itself, the descriptor protocol
    # (__get__, __set__, __delete__, __set_name__: a proxy stored on a class stays a
    # proxy), metaclass hooks (__init_subclass__, __prepare__; __class_getitem__ goes
    # through __getitem__ of the object), __del__ (deleting the proxy must not touch the
    # object).  Pickling is refused above; copy and deepcopy copy the object.
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
        "__copy__",
        "__deepcopy__",
        "__doc__",
        "__reduce__",
        "__reduce_ex__",
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
    head, _, rest = name.partition(".")
    why = invalid_name(head, f"{_call_form(x)}.{head}")
    if why:
        raise ValueError(
            f"cannot proxy {head!r} on {_label(x)}: only names that can be bound can "
            f"be proxied, and {why}"
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

    return _then(get_current, rest or None)


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
