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
from types import FunctionType
from typing import Any, TypeVar, cast

__all__ = [
    "ASYNC_GENERATOR",
    "COROUTINE",
    "GENERATOR",
    "ContextAsyncGenerator",
    "ContextGenerator",
    "async_within",
    "in_context",
    "kind",
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
    way ``inspect`` tells it.
    """
    if type(func) is FunctionType and not func.__dict__:
        return func.__code__.co_flags & (GENERATOR | COROUTINE | ASYNC_GENERATOR)
    if inspect.isgeneratorfunction(func):
        return GENERATOR
    if inspect.isasyncgenfunction(func):
        return ASYNC_GENERATOR
    if inspect.iscoroutinefunction(func):
        return COROUTINE
    return 0


def in_context(func: _F, new_context: Callable[[], contextvars.Context]) -> _F:
    """Wrap *func* so that each call runs in a context made by *new_context*.

    A plain function runs in it; a generator, coroutine or async generator made by the
    call runs each of its steps in it, whoever resumes it.
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
            return new_context().run(func, *args, **kwargs)

    return cast("_F", functools.update_wrapper(wrapper, func))


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
