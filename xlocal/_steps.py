"""Run every step of a generator, coroutine or async generator in a Context of its own.

A generator's body runs piecemeal, each step in whatever context its consumer is in, so
a with-block inside it is seen by the consumer between steps (PEP 568 was deferred).
These wrappers keep a ``contextvars.Context`` for one suspendable object and resume the
object inside it at every step, so its bindings stay with it, and bindings made while
it runs never reach its consumer.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import AbstractContextManager
from types import AsyncGeneratorType, CoroutineType, FunctionType, GeneratorType
from typing import Any, TypeVar, cast

__all__ = [
    "ASYNC_GENERATOR",
    "AWAITABLE",
    "COROUTINE",
    "GENERATOR",
    "ContextAsyncGenerator",
    "ContextGenerator",
    "async_within",
    "in_context",
    "kind",
    "lazy",
    "steps_in",
    "within",
]

_F = TypeVar("_F", bound=Callable[..., Any])


class ContextGenerator(Generator[Any, Any, Any]):
    """A generator, or the iterator behind an awaitable, stepped in *context*."""

    __slots__ = ("_context", "_inner")

    def __init__(self, inner: Generator[Any, Any, Any], context: contextvars.Context):
        self._inner = inner
        self._context = context

    def send(self, value: Any) -> Any:
        return self._context.run(self._inner.send, value)

    def throw(self, *args: Any) -> Any:
        return self._context.run(self._inner.throw, *args)

    def close(self) -> None:
        self._context.run(self._inner.close)

    def __await__(self) -> Generator[Any, Any, Any]:
        return self

    def __del__(self) -> None:
        # Finish an abandoned generator in its own context, so that its with-blocks
        # exit where they were entered rather than in whatever runs the collector.
        inner = getattr(self, "_inner", None)
        frame = getattr(inner, "gi_frame", None) or getattr(inner, "cr_frame", None)
        if frame is not None:
            self.close()


class ContextAsyncGenerator(AsyncGenerator[Any, Any]):
    """An async generator whose steps run in *context*."""

    __slots__ = ("_context", "_inner")

    def __init__(self, inner: AsyncGenerator[Any, Any], context: contextvars.Context):
        self._inner = inner
        self._context = context

    def _step(self, awaitable: Awaitable[Any]) -> Any:
        return ContextGenerator(
            cast("Generator[Any, Any, Any]", awaitable), self._context
        )

    def __anext__(self) -> Any:
        return self._step(self._inner.__anext__())

    def asend(self, value: Any) -> Any:
        return self._step(self._inner.asend(value))

    def athrow(self, *args: Any) -> Any:
        return self._step(self._inner.athrow(*args))

    def aclose(self) -> Any:
        return self._step(self._inner.aclose())


GENERATOR = inspect.CO_GENERATOR
COROUTINE = inspect.CO_COROUTINE
ASYNC_GENERATOR = inspect.CO_ASYNC_GENERATOR


def kind(func: Callable[..., Any]) -> int:
    """What calling *func* makes: GENERATOR, COROUTINE, ASYNC_GENERATOR, or 0.

    A plain function without attributes (which could hold ``inspect``'s marks) is
    told by its code flags at once; anything else, such as a partial or a method, the
    way ``inspect`` tells it, and an object by its ``__call__``.  0 means "not known
    from the callable": what a call returns is then looked at (see steps_in).
    """
    if type(func) is FunctionType and not func.__dict__:
        return func.__code__.co_flags & (GENERATOR | COROUTINE | ASYNC_GENERATOR)
    if inspect.isgeneratorfunction(func):
        return GENERATOR
    if inspect.isasyncgenfunction(func):
        return ASYNC_GENERATOR
    if inspect.iscoroutinefunction(func):
        return COROUTINE
    call = inspect.getattr_static(type(func), "__call__", None)
    if isinstance(call, FunctionType) and not isinstance(func, type):
        return kind(call)  # an object with a generator or `async def __call__`
    return 0


def lazy(result: Any) -> int:
    """What kind of suspendable object *result* is, if its body has yet to run.

    Coroutines, generators, async generators and other awaitables run their body
    when they are stepped, so a call that returned one has not run it yet.  Futures
    and tasks run on their own, and an awaitable that is also a context manager,
    iterator or callable is used those ways too: 0, as for any other value.
    """
    made = type(result)
    if made is CoroutineType:
        return COROUTINE
    if made is GeneratorType:
        return GENERATOR
    if made is AsyncGeneratorType:
        return ASYNC_GENERATOR
    if (
        made.__module__ != "builtins"
        and hasattr(made, "__await__")
        and getattr(result, "_asyncio_future_blocking", None) is None
        and not any(hasattr(made, other) for other in _OTHER_PROTOCOLS)
        and not callable(result)
    ):
        return AWAITABLE
    return 0


#: An awaitable that is also something else (an async context manager, as the request
#: objects of HTTP clients are, an iterator, a callable) is handed back as it is: the
#: coroutine that would await it inside the context could not be used the other ways.
_OTHER_PROTOCOLS = (
    "__aenter__",
    "__enter__",
    "__aiter__",
    "__iter__",
    "add_done_callback",
)


#: lazy()'s answer for an awaitable other than a coroutine, stepped through __await__.
AWAITABLE = -1


def in_context(func: _F, new_context: Callable[[], contextvars.Context]) -> _F:
    """Wrap *func* so that each call runs in a context made by *new_context*.

    A plain function runs in it; a generator, coroutine or async generator made by the
    call runs each of its steps in it, whoever resumes it.  That holds also when the
    callable does not say what it makes (a function that returns a coroutine, say):
    what the call returns is looked at.
    """
    wrapper: Callable[..., Any]
    made = kind(func)
    if made == GENERATOR:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return ContextGenerator(func(*args, **kwargs), new_context())

    elif made == ASYNC_GENERATOR:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return ContextAsyncGenerator(func(*args, **kwargs), new_context())

    elif made == COROUTINE:

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await ContextGenerator(func(*args, **kwargs), new_context())

    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            context = new_context()
            result = context.run(func, *args, **kwargs)
            later = lazy(result)
            return steps_in(later, result, context) if later else result

    return cast("_F", functools.update_wrapper(wrapper, func))


def steps_in(made: int, result: Any, context: contextvars.Context) -> Any:
    """*result*, a suspendable object of kind *made*, stepped in *context*."""
    if made == GENERATOR:
        return ContextGenerator(result, context)
    if made == ASYNC_GENERATOR:
        return ContextAsyncGenerator(result, context)
    if made == AWAITABLE:
        result = result.__await__()
    return _awaited(ContextGenerator(result, context))


async def _awaited(steps: ContextGenerator) -> Any:
    """A coroutine that awaits *steps*, for whoever needs a real coroutine."""
    return await steps


def within(
    manager: AbstractContextManager[Any], inner: Generator[Any, Any, Any]
) -> Generator[Any, Any, Any]:
    """A generator that is *inner* run inside a with-block of *manager*."""
    with manager:
        return (yield from inner)


async def async_within(
    manager: AbstractContextManager[Any], inner: AsyncGenerator[Any, Any]
) -> AsyncGenerator[Any, Any]:
    """An async generator that is *inner* run inside a with-block of *manager*.

    Values sent and exceptions thrown in are passed on to *inner*, as ``yield from``
    would for a plain generator.
    """
    with manager:
        try:
            item = await inner.__anext__()
            while True:
                try:
                    sent = yield item
                except GeneratorExit:
                    raise
                except BaseException as error:
                    item = await inner.athrow(error)
                else:
                    item = await inner.asend(sent)
        except StopAsyncIteration:
            return
        finally:
            await inner.aclose()
