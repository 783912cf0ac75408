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
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import os
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Callable, Generic, NoReturn, TypeVar, cast

from ._steps import (
    ASYNC_GENERATOR,
    COROUTINE,
    GENERATOR,
    ContextAsyncGenerator,
    ContextGenerator,
    async_within,
    kind,
    within,
)

if TYPE_CHECKING:
    from .portable import Codec

__all__ = ["Binding", "get_debug", "set_debug", "xlocal"]

#: The key under which a frame records ``(binding, token)``.  It is not a string, so no
#: attribute read can reach it, and the names a user binds can never collide with it.
_ENTRY: Any = object()

#: The value of every xlocal's variable where nothing is bound.  Being the variable's
#: default, it is never stored in any context.
_EMPTY: dict[Any, Any] = {_ENTRY: (None, None)}

_X = TypeVar("_X", bound="xlocal")
_F = TypeVar("_F", bound=Callable[..., Any])

#: Names already found valid, so that binding checks them with one set operation.  It is
#: capped: a program that binds ever new names checks those the slow way.
_valid_names: set[str] = set()
_VALID_NAMES_CAP = 4096

_object_getattribute = object.__getattribute__
_object_setattr = object.__setattr__
_new = object.__new__


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

    __slots__ = ("__weakref__", "_codec", "_name", "_portable", "_var")

    _name: str | None
    _var: contextvars.ContextVar[dict[Any, Any]]
    _portable: frozenset[str] | bool
    _codec: Codec | None

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
        var: contextvars.ContextVar[dict[Any, Any]] = contextvars.ContextVar(
            name or "xlocal", default=_EMPTY
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
                "__getattribute__": _reader(var),
                "__call__": _binder(var),
            },
        )
        self: _X = object.__new__(own)
        _object_setattr(self, "_name", name)
        _object_setattr(self, "_var", var)
        _object_setattr(self, "_portable", names)
        _object_setattr(self, "_codec", codec)
        if names:
            _register_portable(self)
        return self

    if TYPE_CHECKING:
        # For type checkers only: any name may be bound, and reads are typed Any.  A
        # subclass that annotates names (``user: User``) gets those types instead.
        def __getattr__(self, attr: str) -> Any: ...

        # Each xlocal's own class has the real one, made by _binder().
        def __call__(self: _X, *args: Any, **names: Any) -> Binding[_X]:
            """Return a binding of *names*, to be entered with a with-statement."""

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
        return sorted(_bound_names(self))

    def __repr__(self) -> str:
        names = ", ".join(sorted(_bound_names(self)))
        return f"{_label(self)[:-1]} {'bound: ' + names if names else 'unbound'}>"

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"cannot copy or pickle {_label(self)}: its bindings belong to the "
            f"executions that made them; share the object itself (import it where it "
            f"is needed)"
        )


def _reader(var: contextvars.ContextVar[dict[Any, Any]]) -> Callable[..., Any]:
    """Make ``__getattribute__`` for the xlocal that owns *var*: the read path."""
    get = var.get

    def __getattribute__(self: xlocal, attr: str) -> Any:  # noqa: N807
        try:
            return get()[attr]
        except KeyError:
            pass
        if attr[:1] == "_":
            return _object_getattribute(self, attr)
        # Raised outside the except clause, so that no KeyError is chained to it.
        raise _UnboundError(attr, self)

    return __getattribute__


def _binder(var: contextvars.ContextVar[dict[Any, Any]]) -> Callable[..., Any]:
    """Make ``__call__`` for the xlocal that owns *var*."""

    def __call__(self: _X, *args: Any, **names: Any) -> Binding[_X]:  # noqa: N807
        """Return a binding of *names*, to be entered with a with-statement."""
        if args:
            raise TypeError(
                f"{_label(self)} takes only keyword arguments, as in "
                f"`with {_call_form(self)}(name=value)`; got {len(args)} positional"
            )
        if not _valid_names.issuperset(names):
            _check_names(self, names)
        binding: Binding[_X] = _new(Binding)
        binding._xlocal = self
        binding._var = var
        binding._names = names
        return binding

    return __call__


class _UnboundError(AttributeError):
    """The AttributeError for a name that is not bound; its message is made when shown.

    ``hasattr`` and ``getattr`` with a default drop the error unseen, and formatting
    the message up front was most of the cost of asking for a missing name.  The error
    presents itself as a plain AttributeError, in tracebacks and when pickled; Python
    3.10+ sets its ``name`` and ``obj`` as for any failed attribute read.
    """

    def __str__(self) -> str:
        attr, x = self.args
        return (
            f"{attr!r} is not bound on {_label(x)} in this execution: bind it with "
            f"`with {_call_form(x)}({_kw(attr)}=...)`"
        )

    def __repr__(self) -> str:
        return f"AttributeError({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return AttributeError, (str(self),)


_UnboundError.__module__ = "builtins"
_UnboundError.__name__ = _UnboundError.__qualname__ = "AttributeError"


# -- portable xlocals: what may cross a process boundary (used by xlocal.portable) -----

#: The portable xlocals of this process, by name: the key carriers use.  Weak, so that
#: a collected xlocal frees its name.
_portables: dict[str, weakref.ref[xlocal]] = {}
_portables_lock = threading.Lock()


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
    # Run by the collector, in any thread: no lock; leave a newer xlocal's entry.
    if _portables.get(name) is ref:
        del _portables[name]


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
    for key in names:
        if key[:1] == "_":
            why = "names starting with '_' are reserved for the xlocal itself"
        elif not key.isidentifier():
            why = "names must be Python identifiers"
        else:
            if len(_valid_names) < _VALID_NAMES_CAP:
                _valid_names.add(key)
            continue
        raise ValueError(f"cannot bind {key!r} on {_label(x)}: {why}")


class Binding(Generic[_X]):
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

    __slots__ = ("_names", "_var", "_where", "_xlocal")

    # Made only by calling an xlocal, which checks the names and hands over the fresh
    # dict of its keyword arguments: kept as it is, never copied nor changed.  The
    # xlocal's variable is kept too, so that entering and exiting look nothing up.
    _xlocal: _X
    _var: contextvars.ContextVar[dict[Any, Any]]
    _names: dict[str, Any]
    _where: str  # where it was last entered, in debug mode only

    def __new__(cls, *args: Any, **kwargs: Any) -> Binding[_X]:
        raise TypeError(
            "a Binding is made by calling an xlocal: `xcurrent(name=value)`"
        )

    def __enter__(self) -> _X:
        var = self._var
        frame = {**var.get(), **self._names}
        frame[_ENTRY] = (self, var.set(frame))
        return self._xlocal

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        var = self._var
        binding, token = var.get()[_ENTRY]
        if binding is not self:
            _exit_misplaced(self)
        try:
            var.reset(token)
        except (ValueError, RuntimeError) as error:
            _exit_elsewhere(self, var.get(), error)

    async def __aenter__(self) -> _X:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

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
                f"names for a block, use `with {_call_form(self._xlocal)}(...):`"
            )
        bound: Callable[..., Any]
        made = kind(func)
        if made == COROUTINE:

            async def bound(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

        elif made == GENERATOR:

            def bound(*args: Any, **kwargs: Any) -> Any:
                steps = within(self, func(*args, **kwargs))
                return ContextGenerator(steps, contextvars.copy_context())

        elif made == ASYNC_GENERATOR:

            def bound(*args: Any, **kwargs: Any) -> Any:
                steps = async_within(self, func(*args, **kwargs))
                return ContextAsyncGenerator(steps, contextvars.copy_context())

        else:

            def bound(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return func(*args, **kwargs)

        return cast("_F", functools.wraps(func)(bound))

    def __repr__(self) -> str:
        names = ", ".join(f"{name}=..." for name in self._names)
        return f"<Binding {_call_form(self._xlocal)}({names})>"


def _exit_elsewhere(
    binding: Binding[Any], frame: dict[Any, Any], refusal: Exception
) -> NoReturn:
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
        f"cannot exit {_entered(binding, frame)} here: it was entered in another "
        f"asyncio task or contextvars.Context, {state}. Nothing was changed"
        f"{_exited_at()}"
    ) from None


def _exit_misplaced(binding: Binding[Any]) -> NoReturn:
    """Exit *binding* although it is not the innermost one here, and say so.

    If it is active further out, it and every binding entered after it are exited at
    once, as an exception unwinding them would, so that no stale binding is left in
    this execution; then RuntimeError reports the misuse.
    """
    inner: list[str] = []
    for active, token, frame in _active(binding._var.get()):
        if active is binding:
            try:
                binding._var.reset(token)
            except (ValueError, RuntimeError) as error:
                _exit_elsewhere(binding, frame, error)
            raise RuntimeError(
                f"{_entered(binding, frame)} exited out of order: {len(inner)} "
                f"binding(s) entered after it were still active, innermost {inner[0]}. "
                f"A generator suspended inside a with-block, or __enter__/__exit__ "
                f"called by hand, often causes this. All of them have been exited, "
                f"which restores the bindings from before {binding!r} was entered"
                f"{_exited_at()}"
            )
        inner.append(_entered(active, frame))
    where = getattr(binding, "_where", None)
    last = f" (last entered at {where})" if where else ""
    raise RuntimeError(
        f"cannot exit {binding!r}{last}: it is not active in this execution. It was "
        f"exited already, or entered in another thread, greenlet or task (exit it "
        f"there). Nothing was changed{_exited_at()}"
    )


def _active(
    frame: dict[Any, Any],
) -> Iterator[tuple[Binding[Any], contextvars.Token[Any], dict[Any, Any]]]:
    """The entries active in an execution, innermost first, with their frames."""
    binding, token = frame[_ENTRY]
    while binding is not None:
        yield binding, token, frame
        frame = token.old_value
        if frame is contextvars.Token.MISSING:
            return
        binding, token = frame[_ENTRY]


# -- debug mode: where bindings were entered -------------------------------------------

#: In debug mode, the key under which a frame records ``(token, place)``: where the
#: entry that made the frame was entered.  Tied to the token, so that the record a
#: child frame copies from its parent is never taken for the child's own.
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


def _entered(binding: Binding[Any], frame: dict[Any, Any]) -> str:
    """The binding's repr, with the place it was entered when debug mode recorded it."""
    where = frame.get(_WHERE)
    if where is not None and where[0] is frame[_ENTRY][1]:
        return f"{binding!r} (entered at {where[1]})"
    return repr(binding)


def _exited_at() -> str:
    return (
        f". The exit was at {_caller()}"
        if _plain_enter is not Binding.__enter__
        else ""
    )


def _debug_enter(self: Binding[_X]) -> _X:
    """Binding.__enter__ in debug mode: enter, then record where."""
    target = _plain_enter(self)
    where = _caller()
    frame = self._var.get()
    frame[_WHERE] = (frame[_ENTRY][1], where)
    self._where = where
    return target


_plain_enter = Binding.__enter__


def set_debug(enabled: bool = True) -> None:
    """Turn debug mode on or off, for the whole process.

    In debug mode every entry records where it was made, and the errors for exits out
    of order or in the wrong execution name the place of each entry involved and the
    place of the bad exit.  Entering costs about twice as much; when debug mode is off
    nothing is recorded and nothing is checked.  The environment variable
    ``XLOCAL_DEBUG=1`` turns it on at import.

    .. versionadded:: 1.0
    """
    Binding.__enter__ = _debug_enter if enabled else _plain_enter  # type: ignore[method-assign]


def get_debug() -> bool:
    """Whether debug mode is on.

    .. versionadded:: 1.0
    """
    return Binding.__enter__ is _debug_enter


def _names(frame: dict[Any, Any]) -> dict[str, Any]:
    """The names bound in a frame, without its private records."""
    return {k: v for k, v in frame.items() if isinstance(k, str)}


if os.environ.get("XLOCAL_DEBUG", "") not in (
    "",
    "0",
):  # pragma: no cover - subprocess test
    set_debug(True)
