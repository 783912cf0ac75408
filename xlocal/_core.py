"""The xlocal core: execution locals whose bindings are scoped by with-statements.

This room holds the ``xlocal`` class, the read and bind paths each xlocal gets as a
class of its own (``_reader``, ``_binder``), ``new()``, the install of the compiled
core, and the debug-mode switch.  The rest of the core has rooms of its own, each
importing only the ones before it:

- ``_environment``: the environment's switches, the greenlet check, the compiled core;
- ``_frames``: the frame format, entering a frame, reading frames;
- ``_errors``: the unbound-name errors and how messages name things;
- ``_registry``: the portable xlocals of the process;
- ``_debug``: where bindings were entered, in debug mode;
- ``_misuse``: the exit paths beyond the fast one;
- ``_binding``: ``Binding``, its with-statement and decorator paths.

docs/architecture.rst describes how they work together and why.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Iterable
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Generic,
    TypeVar,
)

from ._binding import Binding
from ._debug import _debug_enter
from ._environment import IMPLEMENTATION, _cxlocal, _flag_from_environment
from ._errors import (
    _call_form,
    _kw,
    _label,
    _missed,
    _UnboundError,
    _UndeclaredError,
)
from ._frames import (
    _EMPTY,
    _ENTRY,
    _bound_names,
    _object_getattribute,
)
from ._misuse import _exit_rest, _reset_or_refuse
from ._namespace import (
    OPEN,
    Namespace,
    describe_attribute,
    invalid_name,
    read_namespace,
)
from ._registry import _portable_names, _register_portable

if TYPE_CHECKING:
    from ._codec import Codec

__all__ = ["IMPLEMENTATION", "Binding", "get_debug", "new", "set_debug", "xlocal"]

_X = TypeVar("_X", bound="xlocal")

#: Names already found valid, so that binding checks them with one set operation.  It is
#: capped: a program that binds ever new names checks those the slow way.
_valid_names: set[str] = set()
_VALID_NAMES_CAP = 4096

_object_setattr = object.__setattr__
_new = object.__new__

if TYPE_CHECKING:
    from typing import Protocol, overload

    from typing_extensions import ParamSpec, Self, dataclass_transform

    _P = ParamSpec("_P")
    _X_co = TypeVar("_X_co", bound="xlocal", covariant=True)

    # How type checkers see typed namespaces.  A subclass of xlocal is dataclass-like
    # for them (PEP 681): they synthesize a ``__replace__`` (Python 3.13+) whose
    # keyword-only parameters are the declared names, all optional, which is exactly
    # what a binding takes; calling an xlocal takes that signature.  A plain xlocal
    # has no fields, so its bindings take any names and its reads are Any.

    class _Declared(Protocol[_P, _X_co]):
        def __replace__(self, *args: _P.args, **kwargs: _P.kwargs) -> _X_co: ...

    class _Open(Protocol):
        # A plain xlocal declares ``__match_args__`` as below; dataclass-like
        # subclasses get ``tuple[()]`` instead, which this protocol refuses: only a
        # plain xlocal reads any name.
        @property
        def __match_args__(self) -> tuple[str]: ...

    _Self_co = TypeVar("_Self_co", covariant=True)

    class _Binder(Generic[_Self_co]):
        # ``__call__`` of an xlocal whose type is _Self_co.  Parametrised by the
        # instance's own type (``_Binder[Self]``), not generic in ``__get__``: the
        # latter sends mypy into an endless recursion on some overloads.
        @overload
        def __get__(
            self: _Binder[_Declared[_P, _X]], instance: object, owner: Any
        ) -> Callable[_P, Binding[_X]]: ...
        @overload
        def __get__(
            self: _Binder[_X], instance: object, owner: Any
        ) -> Callable[..., Binding[_X]]: ...
        def __get__(self, instance: object, owner: Any) -> Any: ...

else:

    def dataclass_transform(**_: Any) -> Callable[[type[Any]], type[Any]]:
        return lambda cls: cls


class _Own:
    """The first base of each xlocal's own class (see ``xlocal.__new__``).

    Its ``__init_subclass__`` is the one that making the own class calls, and it
    calls no other: the hooks of the user's classes ran when their classes were made,
    and do not run again for each xlocal made of them.  It holds nothing, so the own
    class's layout and everything else it finds in its bases are the user's class's.
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        pass


@dataclass_transform(kw_only_default=True)
class xlocal:  # noqa: N801 - the lowercase name is the library's identity
    """A global-looking object whose attributes are bound only by a with-statement.

    ``with xcurrent(name=value):`` binds *name* for the body of the block and for all
    code it calls, in the current thread, greenlet or asyncio task only.  Nested blocks
    shadow outer bindings and restore them on exit, also when the body raises.  Reading
    an unbound name raises AttributeError; assigning or deleting attributes is refused.

    Every name not starting with ``_`` belongs to the user and can be bound.

    :param name: used in ``repr`` and in error messages; the variable name is a good
        choice, as in ``xcurrent = xlocal("xcurrent")``.
    :param portable: which bound names may cross a process boundary (see
        :mod:`xlocal.portable`): ``True`` for every name, or a collection of names.
        A portable xlocal needs a *name*, unique among the portable xlocals of the
        process: it is the key that carriers use.
    :param codec: how a portable xlocal's values are encoded, an object with
        ``encode(value) -> str`` and ``decode(text) -> value``; JSON by default.

    .. versionadded:: 1.0
    """

    __slots__ = ("__weakref__", "_codec", "_empty", "_name", "_portable", "_var")

    _name: str | None
    _var: contextvars.ContextVar[dict[Any, Any]]
    #: The frame where nothing is bound: the variable's default.
    _empty: dict[Any, Any]
    _portable: frozenset[str] | bool
    _codec: Codec | None
    #: What the class declares (typed namespaces); a plain xlocal is open.
    _namespace: ClassVar[Namespace] = OPEN

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._namespace = read_namespace(cls, xlocal)

    def __new__(
        cls: type[_X],
        name: str | None = None,
        *,
        portable: bool | Iterable[str] | None = None,
        codec: Codec | None = None,
    ) -> _X:
        if name is not None and not isinstance(name, str):
            raise TypeError(
                f"xlocal name must be a str or None, not {type(name).__name__}"
            )
        names = _portable_names(name, portable, codec)
        namespace: Namespace = cls._namespace
        empty = {**namespace.defaults, _ENTRY: None} if namespace.defaults else _EMPTY
        var: contextvars.ContextVar[dict[Any, Any]] = contextvars.ContextVar(
            name or "xlocal", default=empty
        )
        # One class per xlocal, so that reading and binding reach its variable through
        # closures: reads ~2x faster than fetching it from the instance, binding ~15%
        # fewer instructions (docs/architecture.rst).
        own = type(
            cls.__name__,
            (_Own, cls),
            {
                "__slots__": (),
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
                "__getattribute__": _reader(var, namespace),
                "__call__": _binder(var, namespace),
            },
        )
        if _cxlocal is not None:
            _cxlocal.attach(own)
        self: _X = object.__new__(own)
        _object_setattr(self, "_name", name)
        _object_setattr(self, "_var", var)
        _object_setattr(self, "_empty", empty)
        _object_setattr(self, "_portable", names)
        _object_setattr(self, "_codec", codec)
        if names:
            _register_portable(self)
        return self

    if TYPE_CHECKING:
        # For type checkers only (see _Binder and _Open above).  A plain xlocal binds
        # and reads any name, typed Any; a typed namespace binds its declared names
        # with their types and reads them typed, and other names are errors.
        __match_args__: tuple[str]
        __replace__: None  # a plain xlocal is not _Declared; typed ones override it

        def __getattr__(self: _Open, attr: str) -> Any: ...

        # Each xlocal's own class has the real one, made by _binder().
        __call__: _Binder[Self]

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError(
            f"cannot set {attr!r} on {_label(self)}: bind it for a block with "
            f"`with {_call_form(self)}({_kw(attr)}=...)`"
        )

    def __delattr__(self, attr: str) -> None:
        raise AttributeError(
            f"cannot delete {attr!r} on {_label(self)}: a binding ends when the "
            f"with-block that made it exits"
        )

    def __dir__(self) -> list[str]:
        namespace = _object_getattribute(self, "_namespace")
        return sorted(
            {*_bound_names(self), *(namespace.declared or ()), *namespace.own}
        )

    def __repr__(self) -> str:
        names = ", ".join(sorted(_bound_names(self)))
        shown = f"{_label(self)[:-1]} {'bound: ' + names if names else 'unbound'}"
        declared = _object_getattribute(self, "_namespace").declared
        if declared is not None:
            shown += f"; declared: {', '.join(sorted(declared))}"
        return shown + ">"

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"cannot copy or pickle {_label(self)}: its bindings belong to the "
            f"executions that made them; share the object itself (import it where it "
            f"is needed)"
        )


def _reader(
    var: contextvars.ContextVar[dict[Any, Any]], namespace: Namespace
) -> Callable[..., Any]:
    """Make ``__getattribute__`` for the xlocal that owns *var*: the read path.

    A bound name, or a declared name's default (the defaults sit in the variable's
    default frame), is found by the first lookup in both kinds of xlocal.
    """
    get = var.get
    if namespace is OPEN:

        def read(self: xlocal, attr: str) -> Any:
            try:
                return get()[attr]
            except KeyError:
                pass
            if attr[:1] == "_":
                return _object_getattribute(self, attr)
            # Raised outside the except clause, so that no KeyError is chained to it.
            raise _missed(_UnboundError, attr, self)

        if _cxlocal is None:
            return read
        fast: Callable[..., Any] = _cxlocal.reader(read, var, None, None)
        return fast

    own, declared = namespace.own, namespace.declared

    def __getattribute__(self: xlocal, attr: str) -> Any:  # noqa: N807
        try:
            return get()[attr]
        except KeyError:
            pass
        if attr in own or attr[:1] == "_":
            return _object_getattribute(self, attr)
        if declared is not None and attr not in declared:
            raise _missed(_UndeclaredError, attr, self)
        raise _missed(_UnboundError, attr, self)

    if _cxlocal is None:
        return __getattribute__
    compiled: Callable[..., Any] = _cxlocal.reader(__getattribute__, var, own, declared)
    return compiled


def _binder(
    var: contextvars.ContextVar[dict[Any, Any]], namespace: Namespace
) -> Callable[..., Any]:
    """Make ``__call__`` for the xlocal that owns *var*."""
    declared, own = namespace.declared, namespace.own

    def __call__(self: _X, *args: Any, **names: Any) -> Binding[_X]:  # noqa: N807
        """Return a binding of *names*, to be entered with a with-statement."""
        if args:
            raise TypeError(
                f"{_label(self)} takes only keyword arguments, as in "
                f"`with {_call_form(self)}(name=value)`; got {len(args)} positional"
            )
        if declared is not None:
            if not declared.issuperset(names):
                _check_names(self, names)
        elif not _valid_names.issuperset(names) or not own.isdisjoint(names):
            _check_names(self, names)
        binding: Binding[_X] = _new(Binding)
        binding._xlocal = self
        binding._var = var
        binding._names = names
        binding._entries = {}
        return binding

    if _cxlocal is None:
        return __call__
    compiled: Callable[..., Any] = _cxlocal.binder(__call__, var, own, declared)
    return compiled


def new(
    cls: type[_X],
    name: str | None = None,
    *,
    portable: bool | Iterable[str] | None = None,
    codec: Codec | None = None,
) -> _X:
    """Make an xlocal of the class *cls*: ``new(Current, "current")``.

    The same as ``cls(name, portable=..., codec=...)``.  Type checkers see a typed
    namespace as a dataclass of its declared names (that is how they check its
    bindings), and so read a call of the class as one that takes those names; this
    call is checked as what it is.

    .. versionadded:: 1.0
    """
    if not (isinstance(cls, type) and issubclass(cls, xlocal)):
        raise TypeError(f"new() takes a subclass of xlocal, not {cls!r}")
    return cls(name, portable=portable, codec=codec)


def _check_names(x: xlocal, names: dict[str, Any]) -> None:
    namespace: Namespace = _object_getattribute(x, "_namespace")
    declared, own = namespace.declared, namespace.own
    for key in names:
        if key in own:
            kind = describe_attribute(inspect.getattr_static(type(x), key))
            raise TypeError(
                f"cannot bind {key!r} on {_label(x)}: {type(x).__name__} defines "
                f"it as a {kind}, not a name to bind"
            )
        why = invalid_name(key, f"{_call_form(x)}.{key}")
        if why is not None:
            raise ValueError(f"cannot bind {key!r} on {_label(x)}: {why}")
        if declared is not None and key not in declared:
            raise TypeError(
                f"cannot bind {key!r} on {_label(x)}: it is not one of its declared "
                f"names, which are {', '.join(sorted(declared))}"
            )
        # Exact str only: the compiled binder looks names up in this set, and a str
        # subclass in it would run its own __eq__ there.
        known = declared is None and type(key) is str
        if known and len(_valid_names) < _VALID_NAMES_CAP:
            _valid_names.add(key)


if _cxlocal is not None:
    # Binding keeps its pure methods as the fallback of the compiled ones.
    Binding.__enter__, Binding.__exit__ = _cxlocal.install(  # type: ignore[method-assign]
        xlocal,
        Binding,
        _ENTRY,
        _valid_names,
        _exit_rest,
        _reset_or_refuse,
        _UnboundError,
        _UndeclaredError,
        Binding.__enter__,
        Binding.__exit__,
    )

_plain_enter = Binding.__enter__


def set_debug(enabled: bool = True) -> None:
    """Turn debug mode on or off, for the whole process.

    In debug mode every entry records where it was made, and the errors for exits out
    of order or in the wrong execution name the place of each entry involved and the
    place of the bad exit.  Entering costs about twice as much; when debug mode is off
    nothing is recorded and nothing is checked.  The environment variable
    ``XLOCAL_DEBUG`` set to ``1``, ``true``, ``yes`` or ``on`` (any case) turns it on at
    import; ``0``, ``false``, ``no``, ``off`` or empty leave it off; any other value
    makes the import fail with ValueError.

    .. versionadded:: 1.0
    """
    Binding.__enter__ = _debug_enter if enabled else _plain_enter  # type: ignore[method-assign]


def get_debug() -> bool:
    """Whether debug mode is on.

    .. versionadded:: 1.0
    """
    return Binding.__enter__ is _debug_enter


if _flag_from_environment(
    "XLOCAL_DEBUG", "turn debug mode on"
):  # pragma: no cover - subprocess test
    set_debug(True)
