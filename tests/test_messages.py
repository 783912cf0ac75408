"""The misuse messages, whole, as README.txt shows them.

Each test pins one misuse's message from its first character to its last, so that a
reworded message cannot drift from the manual unnoticed.  Where README.txt shows a
message in full, the test asserts that same text; README.txt is the spec.

Messages pinned whole in the modules of their feature are not repeated here:
unbound names, assigning and deleting, keywords and NFKC-changed names, positional
arguments, ``xlocal(3)``, names that are not identifiers and xlocal names that are
not (tests/test_core.py); reading an undeclared name and declaring a method's name
(tests/test_namespace.py); ``XLOCAL_DEBUG`` values (tests/test_debug.py);
``ContextExecutor(3)`` (tests/test_spawn.py); ``LocalProxy(3)``, ``LocalProxy(x)``,
proxied names, a proxy to an unbound xlocal name, a missing attribute of a ``Local``
and ``LocalManager(3)`` (tests/test_local.py); unpicklable tasks for a process pool
(tests/test_portable_processes.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import gc
import pickle
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import xlocal as xl
from xlocal import Binding, capture, isolated, new, wrap, xlocal
from xlocal.local import Local, LocalManager, LocalProxy, LocalStack, release_local
from xlocal.portable import CarrierError, UnportableError, carry, extract, inject


def whole(message: str) -> str:
    """An anchored pattern that matches exactly *message*."""
    return f"^{re.escape(message)}$"


def line() -> int:
    """The line number of the caller."""
    return sys._getframe(1).f_lineno


# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("_secret", "names starting with '_' are reserved for the xlocal itself"),
        ("a b", "names must be Python identifiers"),
    ],
)
def test_bad_name(xcurrent: xlocal, name: str, why: str) -> None:
    """Binding a name starting with '_' or one that is not an identifier is refused,
    saying why (README: Errors)."""
    with pytest.raises(
        ValueError, match=whole(f"cannot bind {name!r} on <xlocal 'xcurrent'>: {why}")
    ):
        xcurrent(**{name: 1})


class User:
    """A value to bind."""


class Current(xlocal):
    """The typed namespace of README.txt."""

    user: User
    tenant: str = "public"

    def describe(self) -> str:
        return f"{self.user}@{self.tenant}"


def test_undeclared_name_on_typed_namespace() -> None:
    """Binding a name a typed namespace does not declare names the declared ones."""
    current = new(Current, "current")
    with pytest.raises(
        TypeError,
        match=whole(
            "cannot bind 'usr' on <Current 'current'>: it is not one of its declared "
            "names, which are tenant, user"
        ),
    ):
        current(usr=User())  # type: ignore[call-arg]


def test_method_name_on_typed_namespace() -> None:
    """Binding the name of a method of a typed namespace is refused."""
    current = new(Current, "current")
    with pytest.raises(
        TypeError,
        match=whole(
            "cannot bind 'describe' on <Current 'current'>: Current defines it as a "
            "method, not a name to bind"
        ),
    ):
        current(describe=1)  # type: ignore[call-arg]


def test_new_needs_a_subclass() -> None:
    """new() of something other than a subclass of xlocal is refused."""
    with pytest.raises(
        TypeError, match=whole("new() takes a subclass of xlocal, not 3")
    ):
        new(3)  # type: ignore[type-var]


# -- copies and bindings made by hand --------------------------------------------------


@pytest.mark.parametrize("action", [copy.copy, copy.deepcopy, pickle.dumps])
def test_xlocal_refuses_copy_and_pickle(
    xcurrent: xlocal, action: Callable[[Any], Any]
) -> None:
    """An xlocal cannot be copied or pickled; the message says to share it."""
    with pytest.raises(
        TypeError,
        match=whole(
            "cannot copy or pickle <xlocal 'xcurrent'>: its bindings belong to the "
            "executions that made them; share the object itself (import it where it "
            "is needed)"
        ),
    ):
        action(xcurrent)


def test_binding_made_directly() -> None:
    """Binding() is refused with the way to make one."""
    with pytest.raises(
        TypeError,
        match=whole("a Binding is made by calling an xlocal: `xcurrent(name=value)`"),
    ):
        Binding()


def test_binding_decorates_only_callables(xcurrent: xlocal) -> None:
    """A binding used as a decorator of a non-callable points to the with-form."""
    with pytest.raises(
        TypeError,
        match=whole(
            "<Binding xcurrent(a=...)> decorates a callable, not int; to bind names "
            "for a block, use `with xcurrent(...):`"
        ),
    ):
        xcurrent(a=1)(3)  # type: ignore[type-var]


@pytest.mark.parametrize("helper", [wrap, isolated])
def test_spawn_helpers_take_callables(helper: Callable[[Any], Any]) -> None:
    """wrap() and isolated() of a non-callable name the helper and the type."""
    with pytest.raises(
        TypeError, match=whole(f"{helper.__name__}() takes a callable, not int")
    ):
        helper(3)


def test_snapshot_bindings_takes_an_xlocal() -> None:
    """Snapshot.bindings() of something other than an xlocal names the type."""
    with pytest.raises(
        TypeError, match=whole("Snapshot.bindings() takes an xlocal, not str")
    ):
        capture().bindings("xcurrent")  # type: ignore[arg-type]


# -- exits -----------------------------------------------------------------------------

OUT_OF_ORDER = (
    "{outer} exited out of order: 1 binding(s) entered after it were still active, "
    "innermost {inner}. A generator suspended inside a with-block, or "
    "__enter__/__exit__ called by hand, often causes this. All of them have been "
    "exited, which restores the bindings from before <Binding xcurrent(user=...)> "
    "was entered"
)

NOT_ACTIVE = (
    "cannot exit {binding}: it is not active in this execution. It was exited "
    "already, or entered in another thread, greenlet or task (exit it there), as when "
    "a generator or coroutine abandoned there is finalized here. Nothing was changed"
)


def numbers(x: xlocal) -> Iterator[int]:
    """README.txt's generator that yields inside a with-block."""
    with x(user="generator"):
        yield 1
        yield 2


def test_exit_out_of_order(xcurrent: xlocal) -> None:
    """An outer binding exited while a generator's binding is on top says so, as
    README.txt shows."""
    gen = numbers(xcurrent)
    binding = "<Binding xcurrent(user=...)>"
    with (
        pytest.raises(
            RuntimeError, match=whole(OUT_OF_ORDER.format(outer=binding, inner=binding))
        ),
        xcurrent(user="ann"),
    ):
        next(gen)
    with pytest.raises(RuntimeError, match=whole(NOT_ACTIVE.format(binding=binding))):
        gen.close()


def test_exit_twice(xcurrent: xlocal) -> None:
    """Exiting a binding that was exited already is refused, changing nothing."""
    binding = xcurrent(user="ann")
    with binding:
        pass
    with pytest.raises(
        RuntimeError,
        match=whole(NOT_ACTIVE.format(binding="<Binding xcurrent(user=...)>")),
    ):
        binding.__exit__(None, None, None)


def test_exit_in_another_thread(xcurrent: xlocal) -> None:
    """Exiting in another thread a binding entered in this one is refused there."""
    binding = xcurrent(user="ann")
    errors: list[BaseException] = []

    def other() -> None:
        try:
            binding.__exit__(None, None, None)
        except RuntimeError as error:
            errors.append(error)

    with binding:
        thread = threading.Thread(target=contextvars.Context().run, args=(other,))
        thread.start()
        thread.join(60)
    assert [str(error) for error in errors] == [
        NOT_ACTIVE.format(binding="<Binding xcurrent(user=...)>")
    ]


def test_exit_in_another_task(xcurrent: xlocal) -> None:
    """Exiting in a child task a binding its parent task entered is refused, saying
    it is still bound where it was entered."""
    binding = xcurrent(user="ann")

    async def child() -> None:
        binding.__exit__(None, None, None)

    async def main() -> None:
        with binding:
            await asyncio.create_task(child())

    with pytest.raises(
        RuntimeError,
        match=whole(
            "cannot exit <Binding xcurrent(user=...)> here: it was entered in another "
            "asyncio task or contextvars.Context, where it is still bound; exit it "
            "there. Nothing was changed"
        ),
    ):
        asyncio.run(main())


@pytest.fixture
def debug() -> Iterator[None]:
    """Debug mode on for one test."""
    xl.set_debug(True)
    yield
    xl.set_debug(False)


def test_debug_exit_out_of_order(debug: None, xcurrent: xlocal) -> None:
    """In debug mode, an exit out of order names where each binding was entered and
    where the bad exit was."""
    here = f"{__file__}:{{}} in test_debug_exit_out_of_order"
    outer, inner = xcurrent(user="ann"), xcurrent(user="generator")
    outer.__enter__()
    outer_line = line() - 1
    inner.__enter__()
    inner_line = line() - 1
    with pytest.raises(RuntimeError) as info:
        outer.__exit__(None, None, None)
    exit_line = line() - 1
    binding = "<Binding xcurrent(user=...)>"
    assert str(info.value) == (
        OUT_OF_ORDER.format(
            outer=f"{binding} (entered at {here.format(outer_line)})",
            inner=f"{binding} (entered at {here.format(inner_line)})",
        )
        + f". The exit was at {here.format(exit_line)}"
    )


def test_debug_exit_not_active(debug: None, xcurrent: xlocal) -> None:
    """In debug mode, an exit of a binding not active here names where it was last
    entered and where the bad exit was."""
    here = f"{__file__}:{{}} in test_debug_exit_not_active"
    binding = xcurrent(user="ann")
    with binding:
        entry_line = line() - 1
    with pytest.raises(RuntimeError) as info:
        binding.__exit__(None, None, None)
    exit_line = line() - 1
    shown = f"<Binding xcurrent(user=...)> (last entered at {here.format(entry_line)})"
    assert str(info.value) == (
        NOT_ACTIVE.format(binding=shown) + f". The exit was at {here.format(exit_line)}"
    )


# -- LocalProxy with nothing behind it -------------------------------------------------


def test_proxy_to_unset_local_attribute() -> None:
    """A proxy to a Local's attribute that is not set says so, as README.txt shows."""
    local = Local()
    with pytest.raises(
        RuntimeError,
        match=whole(
            f"'user' is not set on {local!r} in this execution: set it before using "
            f"the proxy"
        ),
    ):
        local("user").upper()


def test_proxy_to_empty_local_stack() -> None:
    """A proxy to an empty LocalStack, or one whose top is None, says so."""
    stack: LocalStack[Any] = LocalStack()
    top = stack()
    with pytest.raises(
        RuntimeError,
        match=whole(
            f"{stack!r} is empty in this execution: push an object before using the "
            f"proxy"
        ),
    ):
        top.upper()
    stack.push(None)
    with pytest.raises(
        RuntimeError,
        match=whole(
            f"the top of {stack!r} is None in this execution, which a proxy treats as "
            f"empty (as werkzeug's does): push an object before using the proxy"
        ),
    ):
        top.upper()
    stack.pop()


def test_proxy_to_unset_context_var() -> None:
    """A proxy to a ContextVar without a value names the variable."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("user")
    with pytest.raises(
        RuntimeError,
        match=whole(
            "ContextVar 'user' has no value in this execution: set it before using "
            "the proxy"
        ),
    ):
        LocalProxy(var).upper()


# -- werkzeug-compatible stores --------------------------------------------------------


def test_delete_missing_local_attribute() -> None:
    """Deleting an attribute a Local does not have set says so."""
    local = Local()
    with pytest.raises(
        AttributeError,
        match=whole(f"cannot delete 'x' on {local!r}: it is not set in this execution"),
    ):
        del local.x


def test_release_local_of_a_proxy() -> None:
    """release_local() of a proxy says to release the store it proxies."""
    with pytest.raises(
        TypeError,
        match=whole(
            "cannot release LocalProxy objects: release_local() takes a Local, "
            "LocalStack or LocalManager (for a proxy, release the store it proxies)"
        ),
    ):
        release_local(Local()("user"))  # type: ignore[arg-type]


def test_local_context_var_must_be_a_context_var() -> None:
    """Local(context_var=...) of something else names what it takes."""
    with pytest.raises(
        TypeError,
        match=whole(
            "Local(context_var=...) takes a contextvars.ContextVar holding a dict, not "
            "int"
        ),
    ):
        Local(context_var=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", [copy.copy, pickle.dumps])
def test_stores_refuse_copy_and_pickle(action: Callable[[Any], Any]) -> None:
    """A Local or a LocalStack cannot be copied or pickled; the message says to share
    the store."""
    local, stack = Local(), LocalStack[Any]()
    with pytest.raises(
        TypeError,
        match=whole(
            f"cannot copy or pickle {local!r}: its data belongs to the executions "
            f"that set it; share the Local itself"
        ),
    ):
        action(local)
    with pytest.raises(
        TypeError,
        match=whole(
            f"cannot copy or pickle {stack!r}: its data belongs to the executions "
            f"that pushed it; share the LocalStack itself"
        ),
    ):
        action(stack)


def test_proxy_refuses_pickle() -> None:
    """A LocalProxy cannot be pickled; the message says to pickle its object."""
    local = Local()
    with pytest.raises(
        TypeError,
        match=whole(
            f"cannot pickle a LocalProxy (of {local!r}): it stands for an object of "
            f"the execution that uses it; pickle proxy._get_current_object() to "
            f"pickle that object"
        ),
    ):
        pickle.dumps(local("user"))


def test_local_manager_stores() -> None:
    """LocalManager of a list holding something other than a store names it."""
    with pytest.raises(
        TypeError,
        match=whole(
            "LocalManager(locals=...) takes Local, LocalStack and LocalManager "
            "objects, not int"
        ),
    ):
        LocalManager([3])  # type: ignore[list-item]


def test_local_manager_ident_func_deprecated() -> None:
    """LocalManager(ident_func=...) warns that the argument is ignored."""
    with pytest.warns(
        DeprecationWarning,
        match=whole(
            "LocalManager(ident_func=...) is deprecated: it is ignored, as "
            "xlocal.local keeps its data in contextvars, which isolate threads, "
            "greenlets and asyncio tasks by themselves; remove the argument"
        ),
    ):
        LocalManager(ident_func=threading.get_ident)


# -- middleware ------------------------------------------------------------------------


def _middleware(kind: str) -> Any:
    if kind == "WSGI":
        from xlocal.wsgi import XlocalMiddleware  # noqa: PLC0415
    else:
        from xlocal.asgi import XlocalMiddleware  # type: ignore[assignment]  # noqa: PLC0415
    return XlocalMiddleware


@pytest.mark.parametrize(("kind", "what"), [("WSGI", "environ"), ("ASGI", "scope")])
def test_middleware_arguments(xcurrent: xlocal, kind: str, what: str) -> None:
    """The WSGI and ASGI middleware refuse a bad app, xlocal, factory or store,
    naming the argument."""
    middleware = _middleware(kind)

    def app(*args: Any) -> Any:
        raise AssertionError("not called")

    with pytest.raises(
        TypeError, match=whole("XlocalMiddleware binds on an xlocal, not on a int")
    ):
        middleware(app, 3)
    with pytest.raises(
        TypeError,
        match=whole(
            f"XlocalMiddleware(app=...) takes the {kind} application to wrap, a "
            f"callable, not int"
        ),
    ):
        middleware(3, xcurrent)
    with pytest.raises(
        TypeError,
        match=whole(
            f"XlocalMiddleware(factories=...): the factory for 'user' is int, not a "
            f"callable; give a callable that makes the value from the {what}"
        ),
    ):
        middleware(app, xcurrent, factories={"user": 3})
    with pytest.raises(
        TypeError,
        match=whole(
            "XlocalMiddleware(locals=...) takes Local, LocalStack and LocalManager "
            "objects, not int"
        ),
    ):
        middleware(app, xcurrent, locals=[3])


# -- portable bindings -----------------------------------------------------------------


def test_portable_needs_a_name() -> None:
    """A portable xlocal without a name is refused, with an example name."""
    with pytest.raises(
        TypeError,
        match=whole(
            "a portable xlocal needs a name, the key that carriers use: "
            "`xlocal('myapp.request', portable=...)`"
        ),
    ):
        xlocal(portable=True)


def test_portable_name_is_unique() -> None:
    """A second portable xlocal with a name in use is refused."""
    first = xlocal("messages.request", portable=True)
    with pytest.raises(
        ValueError,
        match=whole(
            "a portable xlocal named 'messages.request' exists already in this "
            "process: the name is the key carriers use, so it must be unique; import "
            "the existing one instead of making another"
        ),
    ):
        xlocal("messages.request", portable=True)
    del first


def test_portable_takes_true_or_names() -> None:
    """portable= given a string is refused, with an example."""
    with pytest.raises(
        TypeError,
        match=whole(
            "portable= of xlocal('x') must be True or a collection of names, as in "
            "`portable={'user_id'}`, not str"
        ),
    ):
        xlocal("x", portable="a")


def test_codec_needs_portable() -> None:
    """A codec on an xlocal that is not portable is refused."""
    with pytest.raises(
        TypeError,
        match=whole(
            "xlocal('x') got a codec but is not portable: pass `portable=True` or "
            "`portable={...names...}` too"
        ),
    ):
        xlocal("x", codec=object())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def request_x() -> Iterator[xlocal]:
    """README.txt's portable xlocal, 'myapp.request', portable user_id; collected
    afterwards, so that the name is free again for the README's own."""
    gc.collect()  # an earlier one, in a cycle, frees the name
    yield xlocal("myapp.request", portable={"user_id"})
    gc.collect()


def test_unportable_value(request_x: xlocal) -> None:
    """A portable value JSON cannot encode is refused by inject(), as README.txt
    shows."""
    with (
        pytest.raises(
            UnportableError,
            match=whole(
                "cannot carry 'user_id' of <xlocal 'myapp.request'>: its value, of "
                "type tuple, cannot be encoded by <xlocal.portable.JSON> (tuple is not "
                "a JSON type); bind a value the codec takes, give the xlocal a codec= "
                "for this type, or leave 'user_id' out of portable="
            ),
        ),
        request_x(user_id=(7, 8)),
    ):
        inject()


def test_carrier_over_the_limit(request_x: xlocal) -> None:
    """inject() refuses to make a carrier over the limit, naming the largest value."""
    with (
        pytest.raises(
            CarrierError,
            match=whole(
                "cannot make a carrier of 64 characters, over the limit of 50: the "
                "largest value is myapp.request.user_id (22 characters); carry an id "
                "to look the data up with instead, or raise limit="
            ),
        ),
        request_x(user_id="x" * 16),
    ):
        inject(limit=50)


@pytest.mark.parametrize(
    ("carrier", "options", "why"),
    [
        (
            {"xlocal": '{"b": {}, "v": 2}'},
            {},
            "its format version is 2, and this xlocal reads version 1: make it with "
            "the same xlocal version",
        ),
        (
            {"xlocal": '{"b": {"myapp.request": {"db": "1"}}, "v": 1}'},
            {"unknown": "error"},
            "'db' is not portable on <xlocal 'myapp.request'>",
        ),
        (
            {"xlocal": '{"b": {}, "v": 1}'},
            {"key": b"secret"},
            "its signature is missing or does not match: it was changed, or signed "
            "with another key",
        ),
    ],
    ids=["version", "forged", "unsigned"],
)
def test_carrier_refused(
    request_x: xlocal, carrier: dict[str, str], options: dict[str, Any], why: str
) -> None:
    """extract() of a carrier of another version, with a name not portable here (when
    asked to refuse those), or without its signature binds nothing, as README.txt
    shows."""
    with pytest.raises(
        CarrierError,
        match=whole(
            f"cannot extract bindings from the carrier: {why}; nothing was bound"
        ),
    ):
        extract(carrier, **options)


def test_carry_takes_a_plain_callable() -> None:
    """carry() of a non-callable, or of a coroutine function, says what it takes."""
    with pytest.raises(TypeError, match=whole("carry() takes a callable, not int")):
        carry(3)  # type: ignore[type-var]

    async def handler() -> None:
        pass

    with pytest.raises(
        TypeError,
        match=whole(
            f"carry() takes a plain function, and {handler!r} is a coroutine "
            f"function: the bindings would end before its body runs; carry a plain "
            f"function that runs it (asyncio.run(...), list(...))"
        ),
    ):
        carry(handler)
