"""Types of the werkzeug-compatible layer, checked by ``mypy --strict`` (never run)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from typing_extensions import assert_type

from xlocal import xlocal
from xlocal.local import (
    ClosingIterator as WerkzeugClosingIterator,
)
from xlocal.local import (
    ContextVar as WerkzeugContextVar,
)
from xlocal.local import (
    Local,
    LocalManager,
    LocalProxy,
    LocalStack,
    release_local,
)
from xlocal.wsgi import ClosingIterator, WSGIEnvironment, XlocalMiddleware

stack: LocalStack[int] = LocalStack()
# A proxy to a source's own value has the value's type; to a name, Any.
assert_type(LocalProxy(stack), LocalProxy[int])
assert_type(LocalProxy(ContextVar[str]("v")), LocalProxy[str])
assert_type(LocalProxy(lambda: 3), LocalProxy[int])
assert_type(LocalProxy(stack, "real"), LocalProxy[Any])
assert_type(LocalProxy(Local(), "user"), LocalProxy[Any])
assert_type(LocalProxy(xlocal("x"), "request"), LocalProxy[Any])
assert_type(stack.push(1), list[int])
assert_type(stack.top, int | None)

# Anything with __release_local__ is a store: Local, LocalStack, LocalManager.
release_local(Local())
release_local(stack)
release_local(LocalManager())
LocalManager(Local())
LocalManager([Local(), stack, LocalManager()])
release_local(3)  # type: ignore[arg-type]


def app(environ: WSGIEnvironment, start_response: Any) -> list[bytes]:
    return []


XlocalMiddleware(app, xlocal("x"), locals=Local())
XlocalMiddleware(app, xlocal("x"), locals=[Local(), stack, LocalManager()])
XlocalMiddleware(app, xlocal("x"), locals=[3])  # type: ignore[list-item]
ClosingIterator([b""], lambda: None)
ClosingIterator([b""], [lambda: None])

# Flask 2.0 imports ContextVar from werkzeug.local: the same class, typed as such.
assert_type(WerkzeugContextVar[int]("v"), ContextVar[int])
assert WerkzeugClosingIterator is ClosingIterator
