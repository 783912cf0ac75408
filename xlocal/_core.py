"""The xlocal core: execution locals whose bindings are scoped by with-statements.

How it works (see DESIGN.md): each xlocal owns one ContextVar.  Its value is the top
*frame* of the current execution, a plain dict holding every name bound there,
flattened, plus one private entry that records which binding pushed the frame and the
Token that undoes it.  Threads, greenlets and asyncio tasks each have their own
contextvars.Context, so isolation needs no locks and no storage keyed by thread or
greenlet.

Reads take the fast road: every xlocal gets a class of its own whose __getattribute__ is
a closure over the variable's ``get``, so a read is one call, one ``get`` and one dict
lookup.

Entries are identified as themselves, not by their binding object: the frame's record
is a fresh tuple per entry, and the Token that undoes it is kept by the binding, keyed
by the Python frame whose with-statement made the entry.  So an exit finds its own
entry even when one binding object is entered by many executions at once, and no frame
holds a Token: a context never reaches itself (no cycle keeps a dead thread's values),
and a child that inherited frames does not keep its parent's whole context alive.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import os
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from types import FrameType, TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Generic,
    NoReturn,
    TypeVar,
    cast,
)

from ._namespace import (
    OPEN,
    Namespace,
    describe_attribute,
    invalid_name,
    read_namespace,
)
from ._steps import (
    ASYNC_GENERATOR,
    COROUTINE,
    GENERATOR,
    ContextAsyncGenerator,
    ContextGenerator,
    async_within,
    kind,
    lazy,
    within,
)

if TYPE_CHECKING:
    from ._codec import Codec

__all__ = ["IMPLEMENTATION", "Binding", "get_debug", "new", "set_debug", "xlocal"]

#: The key under which a frame records its entry: a tuple ``(names, parent frame)``, new
#: for each entry, whose ``names`` is the dict of the binding that made it.  The key is
#: not a string, so no attribute read can reach it, and the names a user binds can never
#: collide with it.
_ENTRY: Any = object()

#: The value of every xlocal's variable where nothing is bound.  Being the variable's
#: default, it is never stored in any context.
_EMPTY: dict[Any, Any] = {_ENTRY: None}

_X = TypeVar("_X", bound="xlocal")
#: What entering a binding gives: the xlocal.  Not bound to xlocal, because the bound
#: sends mypy into an endless recursion when it checks how xlocal is called.
_B = TypeVar("_B")
_F = TypeVar("_F", bound=Callable[..., Any])

#: Names already found valid, so that binding checks them with one set operation.  It is
#: capped: a program that binds ever new names checks those the slow way.
_valid_names: set[str] = set()
_VALID_NAMES_CAP = 4096

_object_getattribute = object.__getattribute__
_object_setattr = object.__setattr__
_new = object.__new__
_getframe = sys._getframe


def _check_greenlet() -> None:
    """Refuse to run with a greenlet that shares one context between greenlets."""
    try:
        greenlet = importlib.import_module("greenlet")
    except ImportError:
        return
    if not getattr(greenlet, "GREENLET_USE_CONTEXT_VARS", False):
        raise ImportError(
            f"xlocal needs greenlet 0.4.17 or newer, but greenlet "
            f"{getattr(greenlet, '__version__', '(unknown version)')} is installed: "
            f"it does not give each greenlet its own contextvars.Context, so greenlets "
            f"would see each other's bindings; upgrade it: `pip install -U greenlet`"
        )


_check_greenlet()


def _flag_from_environment(variable: str, meaning: str) -> bool:
    """What the environment variable *variable*, a switch that does *meaning*, asks
    for; anything unclear is an error, not a guess."""
    value = os.environ.get(variable, "")
    setting = value.strip().lower()
    if setting in ("", "0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    raise ValueError(
        f"{variable}={value!r} is not understood: set it to 1, true, yes or on to "
        f"{meaning}, or to 0, false, no, off or nothing to leave it off"
    )


def _load_extension() -> Any:
    """The compiled core, xlocal._cxlocal, or None for the pure-Python core.

    The pure core is used on interpreters other than CPython, when the extension was
    not built (no compiler at install), and when ``XLOCAL_NO_EXTENSIONS`` asks for it.
    """
    if (
        _flag_from_environment("XLOCAL_NO_EXTENSIONS", "use the pure-Python core")
        or sys.implementation.name != "cpython"
    ):
        return None
    try:
        return importlib.import_module("xlocal._cxlocal")
    except ImportError:
        return None


#: The compiled core, which _reader, _binder and Binding use when it is loaded.
_cxlocal = _load_extension()

#: Which core runs: "c" (the compiled fast path) or "python" (the pure core).
IMPLEMENTATION = "python" if _cxlocal is None else "c"

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
        if "__xlocal_own__" in cls.__dict__:
            # An xlocal's own class (see __new__): its bases' hooks ran for its class.
            return
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
        # closures: reads ~2x faster than fetching it from the instance (DESIGN.md),
        # binding ~15% fewer instructions.
        own = type(
            cls.__name__,
            (cls,),
            {
                "__slots__": (),
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
                "__getattribute__": _reader(var, namespace),
                "__call__": _binder(var, namespace),
                "__xlocal_own__": True,
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
            raise _UnboundError(attr, self)

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
            raise _UndeclaredError(attr, self)
        raise _UnboundError(attr, self)

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


#: What to check when a name of an xlocal is not bound, said by what binds it (the
#: middleware): read only when an unbound-name message is shown, so reads pay nothing.
_hints: weakref.WeakKeyDictionary[xlocal, str] = weakref.WeakKeyDictionary()


class _UnboundError(AttributeError):
    """The AttributeError for a name that is not bound; its message is made when shown.

    ``hasattr`` and ``getattr`` with a default drop the error unseen, and formatting
    the message up front was most of the cost of asking for a missing name.  The error
    presents itself as a plain AttributeError, in tracebacks and when pickled; Python
    3.10+ sets its ``name`` and ``obj`` as for any failed attribute read.
    """

    def __str__(self) -> str:
        attr, x = self.args
        hint = _hints.get(x)
        return (
            f"{attr!r} is not bound on {_label(x)} in this execution: bind it with "
            f"`with {_call_form(x)}({_kw(attr)}=...)`" + (f". {hint}" if hint else "")
        )

    def __repr__(self) -> str:
        return f"AttributeError({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return AttributeError, (str(self),)


class _UndeclaredError(_UnboundError):
    """The AttributeError for a name a typed namespace does not declare."""

    def __str__(self) -> str:
        attr, x = self.args
        declared = _object_getattribute(x, "_namespace").declared
        return (
            f"{attr!r} is not a declared name of {_label(x)}: its names are "
            f"{', '.join(sorted(declared))}"
        )


for _error in (_UnboundError, _UndeclaredError):
    _error.__module__ = "builtins"
    _error.__name__ = _error.__qualname__ = "AttributeError"
del _error


# -- portable xlocals: what may cross a process boundary (used by xlocal.portable) -----

#: The portable xlocals of this process, by name: the key carriers use.  Weak, so that
#: a collected xlocal frees its name.
_portables: dict[str, weakref.ref[xlocal]] = {}
#: Taken to change _portables.  Reentrant: the collector may run _unregister in a
#: thread that holds it already (a collection started inside _register_portable).
_portables_lock = threading.RLock()


def _portable_names(
    name: str | None, portable: object, codec: object
) -> frozenset[str] | bool:
    """Check the ``portable=`` and ``codec=`` arguments of ``xlocal()``."""
    if portable is None or portable is False:
        if codec is not None:
            raise TypeError(
                f"xlocal({name!r}) got a codec but is not portable: pass "
                f"`portable=True` or `portable={{...names...}}` too"
            )
        return False
    if codec is not None and not (
        callable(getattr(codec, "encode", None))
        and callable(getattr(codec, "decode", None))
    ):
        raise TypeError(
            f"codec of xlocal({name!r}) must have encode(value) -> str and "
            f"decode(text) -> value methods; {type(codec).__name__} has not"
        )
    if not name:
        raise TypeError(
            "a portable xlocal needs a name, the key that carriers use: "
            "`xlocal('myapp.request', portable=...)`"
        )
    if portable is True:
        return True
    if isinstance(portable, (str, bytes)) or not isinstance(portable, Iterable):
        raise TypeError(
            f"portable= of xlocal({name!r}) must be True or a collection of names, "
            f"as in `portable={{'user_id'}}`, not {type(portable).__name__}"
        )
    names = frozenset(portable)
    for key in names:
        if not isinstance(key, str) or not key.isidentifier() or key[:1] == "_":
            raise ValueError(
                f"portable= of xlocal({name!r}) names {key!r}, which cannot be "
                f"bound: portable names are identifiers not starting with '_'"
            )
    if not names:
        raise ValueError(
            f"portable= of xlocal({name!r}) is empty: name the names that may "
            f"cross a process boundary, or leave portable= out"
        )
    return names


def _register_portable(x: xlocal) -> None:
    name: str = _object_getattribute(x, "_name")
    with _portables_lock:
        other = _portables.get(name)
        if other is not None and other() is not None:
            raise ValueError(
                f"a portable xlocal named {name!r} exists already in this process: "
                f"the name is the key carriers use, so it must be unique; import "
                f"the existing one instead of making another"
            )
        _portables[name] = weakref.ref(x, functools.partial(_unregister, name))


def _unregister(name: str, ref: weakref.ref[xlocal]) -> None:
    # Run by the collector, in any thread.  Under the lock: between the check and the
    # delete another thread could register a newer xlocal of the name, whose entry
    # must stay (the GIL does not make the two steps one).
    with _portables_lock:
        if _portables.get(name) is ref:
            del _portables[name]


def _empty_of(x: xlocal) -> dict[Any, Any]:
    """The frame of *x* where nothing is bound: its variable's default."""
    empty: dict[Any, Any] = _object_getattribute(x, "_empty")
    return empty


def _var(x: xlocal) -> contextvars.ContextVar[dict[Any, Any]]:
    var: contextvars.ContextVar[dict[Any, Any]] = _object_getattribute(x, "_var")
    return var


def _bound_names(x: xlocal) -> Iterator[str]:
    return iter(_names(_var(x).get()))


def _label(x: xlocal) -> str:
    name = _object_getattribute(x, "_name")
    kind = type(x).__name__
    return f"<{kind} {name!r}>" if name else f"<{kind} at {id(x):#x}>"


def _call_form(x: xlocal) -> str:
    name: str | None = _object_getattribute(x, "_name")
    return name if name and name.isidentifier() else _label(x)


def _kw(attr: str) -> str:
    return attr if attr.isidentifier() else "..."


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
        if declared is None and len(_valid_names) < _VALID_NAMES_CAP:
            _valid_names.add(key)


class Binding(Generic[_B]):
    """Names to bind on an xlocal, made by calling it: ``xcurrent(request=req)``.

    Entering binds the names in the current execution on top of what it has already
    bound, and gives the xlocal itself (``with xcurrent(x=1) as x:``).  Exiting restores
    the bindings that were there before.  A binding may be entered again later, nested
    inside itself, and by several threads or tasks at once: each entry is independent.

    Entries must be exited in the reverse order of entering, in the execution that
    entered them; otherwise exiting raises RuntimeError.  An entry exited out of order
    takes every entry made after it with it, so that no stale binding is left behind;
    an entry exited in another execution changes nothing.

    .. versionadded:: 1.0
    """

    __slots__ = ("_entries", "_names", "_var", "_where", "_xlocal")

    # Made only by calling an xlocal, which checks the names and hands over the fresh
    # dict of its keyword arguments: kept as it is, never copied nor changed.  The
    # xlocal's variable is kept too, so that entering and exiting look nothing up.
    _xlocal: _B
    _var: contextvars.ContextVar[dict[Any, Any]]
    _names: dict[str, Any]
    # The open entries, by the Python frame that entered them (the frame running the
    # with-statement, kept alive so that no other frame can take its id while the
    # entry is open): ``(record, token, older)``, where *older* is an earlier open
    # entry made by the same frame, or None.
    _entries: dict[FrameType, _OpenEntry]
    _where: str  # where it was last entered, in debug mode only

    def __new__(cls, *args: Any, **kwargs: Any) -> Binding[_B]:
        raise TypeError(
            "a Binding is made by calling an xlocal: `xcurrent(name=value)`"
        )

    def __enter__(self) -> _B:
        var = self._var
        parent = var.get()
        names = self._names
        frame = {**parent, **names}
        frame[_ENTRY] = record = (names, parent)
        owner = _getframe(1)
        entries = self._entries
        entries[owner] = (record, var.set(frame), entries.get(owner))
        return self._xlocal

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        owner = _getframe(1)
        mine = self._entries.pop(owner, None)
        if mine is not None and mine[2] is None:
            var = self._var
            if var.get()[_ENTRY] is mine[0]:
                try:
                    var.reset(mine[1])
                except (ValueError, RuntimeError) as error:
                    _exit_elsewhere(self, mine[0], error)
                return
        _exit_rest(self, owner, mine)

    async def __aenter__(self) -> _B:
        # The frame that awaits this one runs the async with-statement: it owns the
        # entry, as the caller of __enter__ does for a with-statement.
        target = _enter_for(self, _getframe(1))
        if Binding.__enter__ is _debug_enter:
            _record_where(self)
        return target

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        owner = _getframe(1)
        _exit_rest(self, owner, self._entries.pop(owner, None))

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(
            f"cannot copy or pickle {self!r}: a binding is entered by with-statements "
            f"in this process; make another by calling the xlocal, or carry bindings "
            f"to other processes with xlocal.portable"
        )

    def __call__(self, func: _F) -> _F:
        """Decorate *func* to run with these names bound, on top of the caller's.

        The binding is entered anew at each call, in the execution that makes the call,
        so it works for functions handed to other threads or greenlets.  For a
        coroutine function the binding covers the whole awaited call.  A generator or
        async generator function gets a generator that runs each of its steps with the
        binding, on top of the bindings of the code that called it; its consumer never
        sees the binding.
        """
        if not callable(func):
            raise TypeError(
                f"{self!r} decorates a callable, not {type(func).__name__}; to bind "
                f"names for a block, use "
                f"`with {_call_form(cast('xlocal', self._xlocal))}(...):`"
            )
        bound: Callable[..., Any]
        made = kind(func)
        if made == COROUTINE:

            async def bound(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

        elif made:

            def bound(*args: Any, **kwargs: Any) -> Any:
                return _bound_steps(self, made, func(*args, **kwargs))

        else:

            def bound(*args: Any, **kwargs: Any) -> Any:
                with self:
                    result = func(*args, **kwargs)
                later = lazy(result)
                return _bound_steps(self, later, result) if later else result

        return cast("_F", functools.wraps(func)(bound))

    def __repr__(self) -> str:
        names = ", ".join(f"{name}=..." for name in self._names)
        return f"<Binding {_call_form(cast('xlocal', self._xlocal))}({names})>"


def _bound_steps(binding: Binding[Any], made: int, result: Any) -> Any:
    """*result*, a suspendable object of kind *made*, run inside *binding*.

    A generator or async generator runs each step with the binding, on top of the
    bindings of the code that made it, in a context of its own; a coroutine or other
    awaitable is awaited inside the binding, in the execution that awaits it.
    """
    if made == GENERATOR:
        return ContextGenerator(within(binding, result), contextvars.copy_context())
    if made == ASYNC_GENERATOR:
        steps = async_within(binding, result)
        return ContextAsyncGenerator(steps, contextvars.copy_context())
    return _await_within(binding, result)


async def _await_within(binding: Binding[Any], awaitable: Any) -> Any:
    with binding:
        return await awaitable


#: An open entry, as a binding keeps it: ``(record, token, older)``.
_OpenEntry = tuple[Any, "contextvars.Token[dict[Any, Any]]", Any]


def _enter_for(binding: Binding[_B], owner: FrameType) -> _B:
    """Binding.__enter__ for an entry made by the with-statement running in *owner*."""
    var = binding._var
    parent = var.get()
    names = binding._names
    frame = {**parent, **names}
    frame[_ENTRY] = record = (names, parent)
    entries = binding._entries
    entries[owner] = (record, var.set(frame), entries.get(owner))
    return binding._xlocal


def _exit_rest(
    binding: Binding[Any],
    owner: FrameType,
    mine: _OpenEntry | None,
) -> None:
    """Binding.__exit__ beyond its fast path; *mine* is the entry *owner* made."""
    if mine is None:
        _exit_unowned(binding)
        return
    record, token, older = mine
    if older is not None:
        binding._entries[owner] = older
    _exit_misplaced(binding, record, token)


def _exit_unowned(binding: Binding[Any]) -> None:
    """Exit an entry of *binding* from a frame that did not make one.

    ``ExitStack``, ``__exit__`` called by hand or by a context manager's own
    ``__exit__`` end an entry made by another frame.  The entry they end is the
    innermost one of *binding* in this execution whose maker is done, as for an
    ExitStack; failing that, if the binding has such an entry in another execution,
    the exit was meant for that one, and is refused; failing that, the innermost entry
    here, whose maker is running and ends its entry through a helper.
    """
    names = binding._names
    mine = [record for record, _ in _active(binding._var.get()) if record[0] is names]
    running = _running_frames()
    fallback = None
    for record in mine:
        found = _open_entry(binding, record)
        if found is None:
            # Its own exit ran already: this execution only inherited it.
            _exit_elsewhere(binding, record, RuntimeError())
        if found[0] not in running:
            _exit_misplaced(binding, record, found[1], found[0])
            return
        if fallback is None:
            fallback = record, found
    # Every entry active here was made by a running frame, or it was exited above: an
    # entry whose maker is done was made in another execution, and the exit was meant
    # for it.  (A copy of the keys: other threads may enter the binding meanwhile.)
    if fallback is None or any(key not in running for key in list(binding._entries)):
        _not_active(binding)
    record, (key, token) = fallback
    _exit_misplaced(binding, record, token, key)


def _running_frames() -> set[FrameType]:
    """The frames running in this thread around the current call."""
    running: set[FrameType] = set()
    frame: FrameType | None = _getframe(2)
    while frame is not None:
        running.add(frame)
        frame = frame.f_back
    return running


def _open_entry(
    binding: Binding[Any], record: Any
) -> tuple[FrameType, contextvars.Token[Any]] | None:
    """The key and token of *binding*'s open entry *record*, if it has it."""
    for key, newest in list(binding._entries.items()):
        entry = newest
        while entry is not None:
            if entry[0] is record:
                return key, entry[1]
            entry = entry[2]
    return None


def _forget(binding: Binding[Any], record: Any, key: FrameType) -> None:
    """Take the open entry *record*, made by the frame *key*, out of *binding*."""
    entries = binding._entries
    chain: _OpenEntry = entries.pop(key)  # *key* made *record*: it is in the chain
    kept: list[_OpenEntry] = []
    while chain[0] is not record:
        kept.append(chain)
        chain = chain[2]
    older = chain[2]
    for item in reversed(kept):
        older = (item[0], item[1], older)
    if older is not None:
        entries[key] = older


def _reset_or_refuse(binding: Binding[Any], record: Any, token: Any) -> None:
    """Undo the entry *record* with its *token*, or report why reset refused it.

    The compiled core calls this when its own reset was refused, so that the report
    is the pure core's; a refused reset changes nothing, so this one is refused too.
    """
    try:
        binding._var.reset(token)
    except (ValueError, RuntimeError) as error:
        _exit_elsewhere(binding, record, error)


def _exit_elsewhere(binding: Binding[Any], record: Any, refusal: Exception) -> NoReturn:
    """Report an exit of an entry this execution only inherited; reset refused it.

    ``reset`` raises RuntimeError if the entry's token was used, that is, the entry was
    exited already where it was made; ValueError if it is still open there.
    """
    if isinstance(refusal, RuntimeError):
        state = (
            "and exited there already; here it was only inherited, and it ends with "
            "this task or snapshot run"
        )
    else:
        state = "where it is still bound; exit it there"
    raise RuntimeError(
        f"cannot exit {_entered(binding._xlocal, record, binding._var.get())} here: "
        f"it was entered in "
        f"another asyncio task or contextvars.Context, {state}. Nothing was changed"
        f"{_exited_at()}"
    ) from None


def _exit_misplaced(
    binding: Binding[Any],
    record: Any,
    token: contextvars.Token[Any],
    key: FrameType | None = None,
) -> None:
    """Exit the entry *record* of *binding*, which may not be the innermost one here.

    If it is active further out, it and every entry made after it are exited at once,
    as an exception unwinding them would, so that no stale binding is left in this
    execution; then RuntimeError reports the misuse.  If it is not active here, it was
    made in another execution (an abandoned generator or coroutine finalized here, an
    exit called in another thread): nothing is changed.  *key*, if given, is the frame
    that made the entry, to forget the entry by once it is exited.
    """
    x = binding._xlocal
    var = binding._var
    inner: list[str] = []
    for active, frame in _active(var.get()):
        if active is record:
            try:
                var.reset(token)
            except (ValueError, RuntimeError) as error:
                _exit_elsewhere(binding, record, error)
            if key is not None:
                _forget(binding, record, key)
            if not inner:
                return
            raise RuntimeError(
                f"{_entered(x, record, frame)} exited out of order: {len(inner)} "
                f"binding(s) entered after it were still active, innermost {inner[0]}. "
                f"A generator suspended inside a with-block, or __enter__/__exit__ "
                f"called by hand, often causes this. All of them have been exited, "
                f"which restores the bindings from before {binding!r} was entered"
                f"{_exited_at()}"
            )
        inner.append(_entered(x, active, frame))
    _not_active(binding)


def _not_active(binding: Binding[Any]) -> NoReturn:
    where = getattr(binding, "_where", None)
    last = f" (last entered at {where})" if where else ""
    raise RuntimeError(
        f"cannot exit {binding!r}{last}: it is not active in this execution. It was "
        f"exited already, or entered in another thread, greenlet or task (exit it "
        f"there), as when a generator or coroutine abandoned there is finalized here. "
        f"Nothing was changed{_exited_at()}"
    )


def _active(frame: dict[Any, Any]) -> Iterator[tuple[Any, dict[Any, Any]]]:
    """The entries active in an execution, innermost first: ``(record, frame)``."""
    record = frame[_ENTRY]
    while record is not None:
        yield record, frame
        frame = record[1]
        record = frame[_ENTRY]


def _describe(x: xlocal, names: dict[str, Any]) -> str:
    """The repr of a binding of *names* on *x*."""
    shown = ", ".join(f"{name}=..." for name in names)
    return f"<Binding {_call_form(x)}({shown})>"


# -- debug mode: where bindings were entered -------------------------------------------

#: In debug mode, the key under which a frame records ``(record, place)``: where the
#: entry that made the frame was entered.  Tied to the entry's record, so that the
#: place a child frame copies from its parent is never taken for the child's own.
_WHERE: Any = object()

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller() -> str:
    """The place in the user's code that called into xlocal: ``file:line in func``."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
    if frame is None:  # pragma: no cover - some user frame always called us
        return "(unknown place)"
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"


def _entered(x: xlocal, record: Any, frame: dict[Any, Any]) -> str:
    """The repr of the entry *record* of *x*, made in *frame*, with the place it was
    entered when debug mode recorded it."""
    where = frame.get(_WHERE)
    shown = _describe(x, record[0])
    if where is not None and where[0] is record:
        return f"{shown} (entered at {where[1]})"
    return shown


def _exited_at() -> str:
    return (
        f". The exit was at {_caller()}"
        if _plain_enter is not Binding.__enter__
        else ""
    )


def _debug_enter(self: Binding[_B]) -> _B:
    """Binding.__enter__ in debug mode: enter, then record where."""
    target = _enter_for(self, _getframe(1))
    _record_where(self)
    return target


def _record_where(binding: Binding[Any]) -> None:
    """Record where the entry just made was made, for debug mode's messages."""
    where = _caller()
    frame = binding._var.get()
    frame[_WHERE] = (frame[_ENTRY], where)
    binding._where = where


if _cxlocal is not None:
    # Binding keeps its pure methods as the fallback of the compiled ones.
    Binding.__enter__, Binding.__exit__ = _cxlocal.install(  # type: ignore[method-assign]
        xlocal,
        Binding,
        _ENTRY,
        _valid_names,
        _check_names,
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


def _carried(value: Any) -> bool:
    """Whether a context variable holding *value* is xlocal's own, for spawn helpers.

    A frame of an xlocal, or a value whose type says it is safe to share between
    executions (it is never changed in place) with ``__xlocal_carried__ = True``.
    """
    if type(value) is dict:
        return _ENTRY in value
    return getattr(type(value), "__xlocal_carried__", False) is True


def _names(frame: dict[Any, Any]) -> dict[str, Any]:
    """The names bound in a frame: not its private records, nor declared defaults."""
    bound: set[str] = set()
    record = frame[_ENTRY]
    while record is not None:
        bound.update(record[0])
        record = record[1][_ENTRY]
    return {k: v for k, v in frame.items() if k in bound}


if _flag_from_environment(
    "XLOCAL_DEBUG", "turn debug mode on"
):  # pragma: no cover - subprocess test
    set_debug(True)
