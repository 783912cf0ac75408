"""What the WSGI and ASGI middleware and ``LocalManager.make_middleware`` share.

The WSGI types, a response that runs callbacks when it is closed, and the checks a
middleware makes once, when it is built.  A store to release after each request is
anything whose type has ``__release_local__`` (werkzeug's protocol): ``Local``,
``LocalStack`` and ``LocalManager`` have it, and this module needs none of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any, NoReturn, Protocol, cast

from ._core import xlocal
from ._errors import _hints

if sys.version_info < (3, 11):  # pragma: no cover - coverage is measured on 3.11+
    from exceptiongroup import BaseExceptionGroup

WSGIEnvironment = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApplication = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]


class Releasable(Protocol):
    """A store whose current execution's data can be dropped (werkzeug's protocol)."""

    def __release_local__(self) -> None: ...


def run_all(
    callbacks: Iterable[Callable[[], Any]], first: BaseException | None = None
) -> None:
    """Call each of *callbacks*, even after one raised; then raise what they raised.

    *first* is an error raised before them (the app's), which the caller re-raises
    when no callback fails.  One error is raised as it is; several together, *first*
    first (see :func:`raise_all`).
    """
    errors = [] if first is None else [first]
    for callback in callbacks:
        try:
            callback()
        except BaseException as exc:  # raised below, with the others
            errors.append(exc)
    if len(errors) > (first is not None):
        raise_all(errors)


def raise_all(errors: list[BaseException]) -> NoReturn:
    """Raise every one of *errors*, in their order: none is lost.

    One is raised as it is.  Several make a ``BaseExceptionGroup`` (an
    ``ExceptionGroup`` when all are Exceptions; the ``exceptiongroup`` backport's
    before Python 3.11), as an ``xlocal.scope`` raises its errors.
    """
    if len(errors) == 1:
        raise errors[0]
    raise BaseExceptionGroup(
        f"{len(errors)} errors, in the order they were raised", errors
    ) from None


class ClosingIterable:
    """A WSGI response that runs *callbacks* after closing the wrapped response.

    The callbacks run once, when the server calls ``close()``, each even if the ones
    before it raised.

    .. versionadded:: 1.0
    """

    __slots__ = ("_callbacks", "_closed", "_response")

    def __init__(
        self, response: Iterable[bytes], *callbacks: Callable[[], Any]
    ) -> None:
        self._response = response
        self._callbacks = callbacks
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._response)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close: Callable[[], Any] | None = getattr(self._response, "close", None)
        run_all([close, *self._callbacks] if close else list(self._callbacks))


class ClosingIterator(ClosingIterable):
    """werkzeug's ``ClosingIterator``: an iterator over *iterable* with callbacks.

    ``ClosingIterator(iterable, callbacks)`` takes one callable or an iterable of
    them, as ``werkzeug.wsgi.ClosingIterator`` does; ``close()`` closes *iterable*
    and runs them, once, each even if one before it raised.

    .. versionadded:: 1.0
    """

    __slots__ = ("_next",)

    def __init__(
        self,
        iterable: Iterable[bytes],
        callbacks: Callable[[], Any] | Iterable[Callable[[], Any]] | None = None,
    ) -> None:
        if callbacks is None:
            callbacks = ()
        elif callable(callbacks):
            callbacks = (callbacks,)
        super().__init__(iterable, *callbacks)
        self._next: Callable[[], bytes] = partial(next, iter(iterable))

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return self._next()


def stores(
    locals: Releasable | Iterable[Releasable], argument: str
) -> list[Releasable]:
    """Check *locals* (one store, or an iterable of them) and return them as a list.

    A store is anything whose type has ``__release_local__``: a Local, a LocalStack, a
    LocalManager.  *argument* names the argument in the messages.
    """
    if hasattr(type(locals), "__release_local__"):
        return [cast("Releasable", locals)]
    if isinstance(locals, (str, bytes, type)) or not isinstance(locals, Iterable):
        raise TypeError(
            f"{argument} takes a Local, LocalStack or LocalManager, or a list of "
            f"them, not {_describe(locals)}"
        )
    found = list(locals)
    for local in found:
        if not hasattr(type(local), "__release_local__"):
            raise TypeError(
                f"{argument} takes Local, LocalStack and LocalManager objects, not "
                f"{_describe(local)}"
            )
    return found


#: What to do instead, for objects often given where a store is wanted.
_HINTS = {
    "LocalProxy": ": give the Local or LocalStack it proxies",
    "xlocal": ": its bindings end with their with-blocks and need no release",
}


def _describe(obj: object) -> str:
    """Name what was given instead of a store, with what to give instead."""
    if isinstance(obj, type) and hasattr(obj, "__release_local__"):
        return f"the class {obj.__name__}: give an instance, {obj.__name__}()"
    name = type(obj).__name__
    return name + _HINTS.get(name, "")


def releaser(locals: Iterable[Releasable]) -> tuple[Callable[[], None], ...]:
    """The calls that release each of *locals* (a manager: all it holds), to make
    with :func:`run_all`, so that every error of theirs is raised."""
    return tuple(type(local).__release_local__.__get__(local) for local in locals)


def setup(
    app: object,
    x: xlocal,
    *,
    kind: str,
    own: str | None,
    what: str,
    factories: Mapping[str, Callable[..., Any]] | None,
    locals: Releasable | Iterable[Releasable],
) -> tuple[dict[str, Callable[..., Any]], tuple[Callable[[], None], ...]]:
    """Check the arguments of a WSGI or ASGI middleware, once, when it is made.

    *kind* is the protocol (WSGI, ASGI); *own* is the name the middleware binds the
    *what* (environ, scope) under.  Returns the factories and the calls that
    release *locals* after each request (see :func:`releaser`).
    """
    if not callable(app):
        raise TypeError(
            f"XlocalMiddleware(app=...) takes the {kind} application to wrap, a "
            f"callable, not {type(app).__name__}"
        )
    if not isinstance(x, xlocal):
        raise TypeError(
            f"XlocalMiddleware binds on an xlocal, not on a {type(x).__name__}"
        )
    if own is not None and not isinstance(own, str):
        raise TypeError(
            f"XlocalMiddleware({what}=...) takes the name to bind the {what} under, "
            f"or None, not {type(own).__name__}"
        )
    if factories is None:
        factories = {}
    elif not isinstance(factories, Mapping):
        raise TypeError(
            f"XlocalMiddleware(factories=...) takes a mapping of names to callables, "
            f"as in factories={{'request': Request}}, not {type(factories).__name__}"
        )
    made = dict(factories)
    for name, make in made.items():
        if not isinstance(name, str):
            raise TypeError(
                f"XlocalMiddleware(factories=...) takes names as str keys, not {name!r}"
            )
        if not callable(make):
            raise TypeError(
                f"XlocalMiddleware(factories=...): the factory for {name!r} is "
                f"{type(make).__name__}, not a callable; give a callable that makes "
                f"the value from the {what}"
            )
    if own in made:
        raise ValueError(
            f"cannot bind {own!r} twice: it is both the {what}'s name and a factory's"
        )
    x(**dict.fromkeys([*made, *([] if own is None else [own])]))  # checks the names
    _hints[x] = (
        f"It is bound for each request by the {kind} XlocalMiddleware: code that runs "
        f"outside the middleware sees nothing bound, such as an error handler a "
        f"framework installs outside it (Starlette and FastAPI run the handler of "
        f"Exception outside user middleware); wrap the whole application with the "
        f"middleware instead"
    )
    return made, releaser(stores(locals, "XlocalMiddleware(locals=...)"))
