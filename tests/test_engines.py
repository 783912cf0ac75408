"""xlocal._engines.hidden(): what the engine adapters hide from a task and give back."""

from __future__ import annotations

import contextvars
from typing import Any

from xlocal import xlocal
from xlocal._engines import hidden
from xlocal.local import Local, LocalStack

request = xlocal("tests.engines.request")
store = Local()
stack: LocalStack[str] = LocalStack()
user = store("user")
top = stack()
#: A context variable of someone else's, holding a dict and a list as stores do.
other: contextvars.ContextVar[Any] = contextvars.ContextVar("tests.engines.other")


def state() -> tuple[Any, ...]:
    """What the current execution sees of every kind of state above."""
    return (
        dir(request),
        dict(store),
        stack.top,
        bool(user),
        bool(top),
        other.get(None),
    )


def test_hidden_empties_xlocal_s_own_state_and_nothing_else() -> None:
    """Inside hidden() every xlocal is unbound and every Local and LocalStack, and
    every proxy to them, is empty; another context variable keeps its value."""

    def run() -> tuple[Any, ...]:
        mine = {"a": 1}
        other.set(mine)
        store.user = "caller"
        stack.push("caller")
        with request(user_id=1):
            outside = state()
            with hidden():
                inside = state()
                kept = other.get() is mine
            return outside, inside, kept, state()

    outside, inside, kept, after = contextvars.Context().run(run)
    shown = (["user_id"], {"user": "caller"}, "caller", True, True, {"a": 1})
    assert outside == after == shown
    assert inside == ([], {}, None, False, False, {"a": 1})
    assert kept


def test_hidden_gives_back_the_state_it_found() -> None:
    """After hidden() xlocal's own state is as it was, whatever the block wrote: what it
    bound and left open, set, pushed, deleted or released, on state shown before the
    block or not."""

    def block() -> None:
        request(leaked=1).__enter__()  # never exited
        store.user = "block"
        store.more = "block"
        del store.more
        stack.push("block")
        other.set("block's")

    def run(shown: bool) -> tuple[Any, ...]:
        if shown:
            store.user = "caller"
            stack.push("caller")
        with hidden():
            block()
        return state()

    shown = ([], {"user": "caller"}, "caller", True, True, "block's")
    empty = ([], {}, None, False, False, "block's")
    assert contextvars.Context().run(run, True) == shown
    assert contextvars.Context().run(run, False) == empty


def test_hidden_gives_back_what_a_store_held_that_was_not_xlocal_s_own() -> None:
    """A Local on a ContextVar to which the program set a plain dict of its own shows
    that dict inside hidden(), as capture() does not carry it; after a write in the
    block, the variable holds that same dict again."""
    var: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("tests.plain")
    own = Local(var)

    def run() -> tuple[Any, ...]:
        plain = {"user": "program"}
        var.set(plain)
        with hidden():
            inside = dict(own)
            own.user = "block"
        return inside, var.get() is plain

    assert contextvars.Context().run(run) == ({"user": "program"}, True)


def test_hidden_hides_the_current_scope() -> None:
    """A task run inside a structured scope (an eager Celery task, a Dask task in a
    worker thread) sees no scope, as a worker process would; the scope is back after
    it, and nothing new is made for it."""
    import xlocal as xl  # noqa: PLC0415 - the package's scope, beside the class above

    current = xlocal("current")
    with xl.scope() as s, current(user="ann"):
        assert xl.scope.current() is s
        with hidden():
            assert xl.scope.current() is None
            assert not hasattr(current, "user")
            with xl.scope() as inner:
                assert xl.scope.current() is inner
            assert xl.scope.current() is None
        assert xl.scope.current() is s
        assert current.user == "ann"
    assert xl.scope.current() is None
