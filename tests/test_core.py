"""The xlocal core in one execution: binding, reading, nesting, misuse, leftovers."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import gc
import os
import pickle
import re
import sys
import threading
import traceback
import types
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import collected, python

import xlocal as xl
import xlocal as xlocal_module
from xlocal import Binding, _core, _environment, xlocal

# -- binding and reading ---------------------------------------------------------------


def test_read_inside_and_outside(xcurrent: xlocal) -> None:
    """A name is readable inside its with-block and unbound after it."""
    value = object()
    with xcurrent(request=value):
        assert xcurrent.request is value
    with pytest.raises(AttributeError):
        xcurrent.request  # noqa: B018


def test_as_gives_the_xlocal(xcurrent: xlocal) -> None:
    """``with xcurrent(...) as x`` gives the xlocal itself."""
    with xcurrent(a=1) as x:
        assert x is xcurrent


def test_seen_by_called_code(xcurrent: xlocal) -> None:
    """Code called inside the block sees the binding without being passed anything."""

    def handler() -> Any:
        return xcurrent.request

    with xcurrent(request="req"):
        assert handler() == "req"


def test_several_names(xcurrent: xlocal) -> None:
    """One binding can bind several names at once."""
    with xcurrent(request="req", user="u"):
        assert (xcurrent.request, xcurrent.user) == ("req", "u")


def test_nesting_shadows_and_restores(xcurrent: xlocal) -> None:
    """An inner binding shadows an outer one; exit restores the outer value."""
    with xcurrent(a=1, b=2):
        with xcurrent(a=10, c=30):
            assert (xcurrent.a, xcurrent.b, xcurrent.c) == (10, 2, 30)
        assert (xcurrent.a, xcurrent.b) == (1, 2)
        assert not hasattr(xcurrent, "c")


@pytest.mark.parametrize(
    "exc_type", [ValueError, KeyboardInterrupt, SystemExit, GeneratorExit]
)
def test_exit_restores_on_any_exception(
    xcurrent: xlocal, exc_type: type[BaseException]
) -> None:
    """Any BaseException leaving the body restores the outer bindings."""
    with xcurrent(a=1):
        with pytest.raises(exc_type), xcurrent(a=2):
            raise exc_type
        assert xcurrent.a == 1


def test_exception_is_not_swallowed(xcurrent: xlocal) -> None:
    """Exiting never suppresses the body's exception."""
    with pytest.raises(ZeroDivisionError), xcurrent(a=1):
        1 / 0  # noqa: B018


def test_getattr_and_hasattr(xcurrent: xlocal) -> None:
    """getattr with a default and hasattr work as on any object."""
    assert getattr(xcurrent, "user", None) is None
    assert not hasattr(xcurrent, "user")
    with xcurrent(user="u"):
        assert getattr(xcurrent, "user", None) == "u"
        assert hasattr(xcurrent, "user")


@pytest.mark.parametrize(
    "name",
    ["request", "get", "run", "items", "keys", "name", "var", "names", "bind", "wrap"],
)
def test_every_public_name_is_bindable(xcurrent: xlocal, name: str) -> None:
    """Names that look like API (get, run, items, ...) belong to the user."""
    with xcurrent(**{name: 42}):
        assert getattr(xcurrent, name) == 42
    assert not hasattr(xcurrent, name)


@pytest.mark.parametrize("name", ["class", "None", "True", "async", "lambda"])
def test_keywords_are_refused(xcurrent: xlocal, name: str) -> None:
    """A keyword cannot be read as an attribute, so binding it is refused."""
    with pytest.raises(
        ValueError,
        match=rf"^cannot bind {name!r} on <xlocal 'xcurrent'>: it is a Python keyword, "
        rf"so `xcurrent\.{name}` cannot be written; choose another name$",
    ):
        xcurrent(**{name: 1})


@pytest.mark.parametrize("name", ["match", "case", "type"])
def test_soft_keywords_are_bindable(xcurrent: xlocal, name: str) -> None:
    """Soft keywords are ordinary attribute names, and bind like any other."""
    with xcurrent(**{name: 1}):
        assert eval(f"xcurrent.{name}", {"xcurrent": xcurrent}) == 1


def test_names_changed_by_normalisation_are_refused(xcurrent: xlocal) -> None:
    """A name that Python's NFKC normalisation changes could never be read back as
    written, so binding it is refused, naming what Python reads instead."""
    with pytest.raises(
        ValueError,
        match=r"^cannot bind '\ufb01' on <xlocal 'xcurrent'>: Python reads "
        r"`xcurrent\.\ufb01` as 'fi' \(NFKC normalisation\); bind the normalised "
        r"name$",
    ):
        xcurrent(**{"\ufb01": 1})  # noqa: PIE804 - in source, Python would read fi
    with xcurrent(fi=1):  # what `xcurrent.\ufb01` reads
        assert eval("xcurrent.\ufb01", {"xcurrent": xcurrent}) == 1


def test_none_and_falsy_values(xcurrent: xlocal) -> None:
    """None and other falsy values are bindings like any other."""
    with xcurrent(a=None, b=0, c=""):
        assert (xcurrent.a, xcurrent.b, xcurrent.c) == (None, 0, "")
        assert hasattr(xcurrent, "a")


def test_empty_binding(xcurrent: xlocal) -> None:
    """A binding of no names is allowed and changes nothing visible."""
    with xcurrent(a=1), xcurrent():
        assert dir(xcurrent) == ["a"]


def test_xlocals_are_independent(make_xlocal: Any) -> None:
    """Several xlocal objects never see each other's bindings."""
    one, two = make_xlocal("one"), make_xlocal("two")
    with one(a=1):
        assert not hasattr(two, "a")
        with two(a=2):
            assert (one.a, two.a) == (1, 2)
        assert one.a == 1


def test_values_are_shared_not_copied(xcurrent: xlocal) -> None:
    """A bound value is the object itself, not a copy."""
    value: list[int] = []
    with xcurrent(items=value):
        xcurrent.items.append(1)
    assert value == [1]


# -- binding objects -------------------------------------------------------------------


def test_binding_reentered_later(xcurrent: xlocal) -> None:
    """A binding object can be entered again after it exited."""
    binding = xcurrent(a=1)
    for _ in range(3):
        with binding:
            assert xcurrent.a == 1
        assert not hasattr(xcurrent, "a")


def test_binding_nested_in_itself(xcurrent: xlocal) -> None:
    """A binding entered inside itself exits one level at a time."""
    binding = xcurrent(a=1)
    with binding:
        with xcurrent(a=2), binding:
            assert xcurrent.a == 1
        assert xcurrent.a == 1
    assert not hasattr(xcurrent, "a")


def test_binding_entered_by_threads_at_once(xcurrent: xlocal) -> None:
    """Threads entering one binding object at once each get an independent entry."""
    binding = xcurrent(a=1)
    n = 8
    inside, leave = threading.Barrier(n, timeout=10), threading.Barrier(n, timeout=10)
    seen: list[Any] = []

    def run(i: int) -> None:
        with xcurrent(i=i), binding:
            inside.wait()
            seen.append((xcurrent.i, xcurrent.a))
            leave.wait()
        seen.append(dir(xcurrent))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(s for s in seen if isinstance(s, tuple)) == [(i, 1) for i in range(n)]
    assert [s for s in seen if isinstance(s, list)] == [[]] * n


def test_binding_cannot_be_made_directly() -> None:
    """Binding objects come only from calling an xlocal."""
    with pytest.raises(TypeError, match=r"^a Binding is made by calling an xlocal"):
        Binding()


def test_binding_repr(xcurrent: xlocal) -> None:
    """A binding's repr names the xlocal and the names, never the values."""
    assert repr(xcurrent(a="secret", b=2)) == "<Binding xcurrent(a=..., b=...)>"


# -- repr, dir, identity ---------------------------------------------------------------


def test_repr_shows_bound_names(xcurrent: xlocal) -> None:
    """repr shows the name and the names bound in the current execution."""
    assert repr(xcurrent) == "<xlocal 'xcurrent' unbound>"
    with xcurrent(user=1, request=2):
        assert repr(xcurrent) == "<xlocal 'xcurrent' bound: request, user>"


def test_repr_unnamed(make_xlocal: Any) -> None:
    """An unnamed xlocal is shown by its address."""
    x = make_xlocal(None)
    assert repr(x) == f"<xlocal at {id(x):#x} unbound>"


def test_dir_lists_bound_names(xcurrent: xlocal) -> None:
    """dir() lists exactly the names bound in the current execution."""
    assert dir(xcurrent) == []
    with xcurrent(b=1, a=2):
        assert dir(xcurrent) == ["a", "b"]


def test_isinstance_and_type_name(xcurrent: xlocal) -> None:
    """An xlocal is an instance of xlocal, and its type reads as xlocal."""
    assert isinstance(xcurrent, xlocal)
    assert type(xcurrent).__name__ == "xlocal"
    assert type(xcurrent).__module__ == "xlocal"


def test_subclass(make_xlocal: Any) -> None:
    """Subclasses of xlocal work the same and show their own class name."""

    class Current(xlocal):
        pass

    current = Current("current")
    assert isinstance(current, Current)
    with current(user="u"):
        assert current.user == "u"
    assert repr(current) == "<Current 'current' unbound>"


def test_own_underscore_attributes_stay_reachable(xcurrent: xlocal) -> None:
    """Dunder and private attributes resolve on the object, not on the bindings."""
    assert xcurrent.__class__ is type(xcurrent)
    assert callable(xcurrent.__repr__)


def test_equality_is_identity(make_xlocal: Any) -> None:
    """xlocal objects compare and hash by identity, whatever is bound."""
    one, two = make_xlocal("one"), make_xlocal("one")
    assert one != two
    assert len({one, two, one}) == 2


def test_exports() -> None:
    """The package exports exactly its public names, under their public module."""
    assert sorted(xlocal_module.__all__) == xlocal_module.__all__
    assert set(xlocal_module.__all__) == {
        "Binding",
        "ContextExecutor",
        "IMPLEMENTATION",
        "ScopeClosedError",
        "Snapshot",
        "Thread",
        "__version__",
        "capture",
        "get_debug",
        "isolated",
        "new",
        "scope",
        "set_debug",
        "wrap",
        "xlocal",
    }
    for name in set(xlocal_module.__all__) - {"__version__", "IMPLEMENTATION"}:
        assert getattr(xlocal_module, name).__module__ == "xlocal", name


# -- misuse ----------------------------------------------------------------------------


def test_unbound_name_message(xcurrent: xlocal) -> None:
    """Reading an unbound name says which xlocal and how to bind it."""
    with pytest.raises(
        AttributeError,
        match=r"^'request' is not bound on <xlocal 'xcurrent'> in this execution: "
        r"bind it with `with xcurrent\(request=\.\.\.\)`$",
    ) as info:
        xcurrent.request  # noqa: B018
    if sys.version_info >= (3, 10):  # the interpreter sets these from 3.10 on
        assert info.value.name == "request"
        assert info.value.obj is xcurrent
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None


def test_unbound_error_is_a_plain_attribute_error(xcurrent: xlocal) -> None:
    """The unbound-name error reads, prints and pickles as a plain AttributeError."""
    with pytest.raises(AttributeError) as info:
        xcurrent.request  # noqa: B018
    error = info.value
    message = "'request' is not bound on <xlocal 'xcurrent'> in this execution"
    assert type(error).__name__ == "AttributeError"
    assert repr(error).startswith(f'AttributeError("{message}')
    assert "".join(traceback.format_exception_only(type(error), error)).startswith(
        f"AttributeError: {message}"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is AttributeError
    assert str(copy) == str(error)


def _whole(message: str) -> str:
    """An anchored pattern that matches exactly *message*."""
    return f"^{re.escape(message)}$"


def test_messages_show_a_non_identifier_xlocal_by_its_label(make_xlocal: Any) -> None:
    """An xlocal whose name is not an identifier (or is empty) is shown by its label
    where messages show code to write, since its name cannot be written as code."""
    dotted, empty = make_xlocal("myapp.request"), make_xlocal("")
    for x, label in [
        (dotted, "<xlocal 'myapp.request'>"),
        (empty, f"<xlocal at {id(empty):#x}>"),
    ]:
        with pytest.raises(
            AttributeError,
            match=_whole(
                f"'user' is not bound on {label} in this execution: bind it with "
                f"`with {label}(user=...)`"
            ),
        ):
            x.user  # noqa: B018
        with pytest.raises(
            AttributeError,
            match=_whole(
                f"cannot set 'user' on {label}: bind it for a block with "
                f"`with {label}(user=...)`"
            ),
        ):
            x.user = 1
        with pytest.raises(
            TypeError,
            match=_whole(
                f"{label} takes only keyword arguments, as in "
                f"`with {label}(name=value)`; got 1 positional"
            ),
        ):
            x(1)
        with pytest.raises(
            ValueError,
            match=_whole(
                f"cannot bind 'class' on {label}: it is a Python keyword, so "
                f"`{label}.class` cannot be written; choose another name"
            ),
        ):
            x(**{"class": 1})
        binding = x(a=1)
        assert repr(binding) == f"<Binding {label}(a=...)>"
        with pytest.raises(
            TypeError,
            match=_whole(
                f"<Binding {label}(a=...)> decorates a callable, not int; to bind "
                f"names for a block, use `with {label}(...):`"
            ),
        ):
            binding(3)
    assert repr(dotted) == "<xlocal 'myapp.request' unbound>"


def test_messages_for_attribute_names_that_are_not_identifiers(
    xcurrent: xlocal,
) -> None:
    """Reading, setting, deleting or binding a name that is not an identifier says
    so, and shows the with-statement with a placeholder for the name."""
    with pytest.raises(
        AttributeError,
        match=_whole(
            "'1a' is not bound on <xlocal 'xcurrent'> in this execution: bind it with "
            "`with xcurrent(...=...)`"
        ),
    ):
        getattr(xcurrent, "1a")
    with pytest.raises(
        AttributeError,
        match=_whole(
            "cannot set 'a b' on <xlocal 'xcurrent'>: bind it for a block with "
            "`with xcurrent(...=...)`"
        ),
    ):
        setattr(xcurrent, "a b", 1)
    with pytest.raises(
        AttributeError,
        match=_whole(
            "cannot delete '1a' on <xlocal 'xcurrent'>: a binding ends when the "
            "with-block that made it exits"
        ),
    ):
        delattr(xcurrent, "1a")
    with pytest.raises(
        ValueError,
        match=_whole(
            "cannot bind '1a' on <xlocal 'xcurrent'>: names must be Python identifiers"
        ),
    ):
        xcurrent(**{"1a": 1})


def test_unbound_name_message_unnamed(make_xlocal: Any) -> None:
    """An unnamed xlocal's messages show it by its address."""
    x = make_xlocal(None)
    with pytest.raises(
        AttributeError, match=r"with <xlocal at 0x[0-9a-f]+>\(a=\.\.\.\)"
    ):
        x.a  # noqa: B018


def test_unbound_private_name(xcurrent: xlocal) -> None:
    """An unknown _-name fails like any missing attribute."""
    with pytest.raises(AttributeError, match="_nope"):
        xcurrent._nope  # noqa: B018


def test_setattr_refused(xcurrent: xlocal) -> None:
    """Assigning an attribute is refused, with the with-statement to use instead."""
    with pytest.raises(
        AttributeError,
        match=r"^cannot set 'x' on <xlocal 'xcurrent'>: bind it for a block with "
        r"`with xcurrent\(x=\.\.\.\)`$",
    ):
        xcurrent.x = 1
    with xcurrent(x=1), pytest.raises(AttributeError, match=r"^cannot set 'x'"):
        xcurrent.x = 2


def test_setattr_private_refused(xcurrent: xlocal) -> None:
    """Even the xlocal's own _-attributes cannot be assigned."""
    with pytest.raises(AttributeError, match=r"^cannot set '_var'"):
        xcurrent._var = None


def test_delattr_refused(xcurrent: xlocal) -> None:
    """Deleting an attribute is refused, bound or not."""
    with (
        xcurrent(x=1),
        pytest.raises(
            AttributeError,
            match=r"^cannot delete 'x' on <xlocal 'xcurrent'>: a binding ends when the "
            r"with-block that made it exits$",
        ),
    ):
        del xcurrent.x


def test_called_code_cannot_rebind(xcurrent: xlocal) -> None:
    """Code called inside a block cannot change its caller's binding."""

    def callee() -> None:
        with xcurrent(x=2):
            pass
        with pytest.raises(AttributeError):
            xcurrent.x = 3

    with xcurrent(x=1):
        callee()
        assert xcurrent.x == 1


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("_private", "names starting with '_' are reserved for the xlocal itself"),
        ("__dunder__", "names starting with '_' are reserved for the xlocal itself"),
        ("a b", "names must be Python identifiers"),
        ("1a", "names must be Python identifiers"),
        ("", "names must be Python identifiers"),
        ("a.b", "names must be Python identifiers"),
    ],
)
def test_bad_names_refused(xcurrent: xlocal, name: str, why: str) -> None:
    """Names starting with _ and non-identifiers are refused when binding is made."""
    with pytest.raises(
        ValueError, match=rf"^cannot bind {name!r} on <xlocal 'xcurrent'>"
    ):
        xcurrent(**{name: 1})
    with pytest.raises(ValueError, match=why):
        xcurrent(ok=1, **{name: 1})


def test_bad_name_refused_after_good_ones_cached(xcurrent: xlocal) -> None:
    """A bad name is refused even among names that were accepted before."""
    with xcurrent(good=1):
        pass
    with pytest.raises(ValueError, match=r"'_bad'"):
        xcurrent(good=1, _bad=2)


def test_positional_arguments_refused(xcurrent: xlocal) -> None:
    """Positional arguments are refused with the keyword form to use."""
    with pytest.raises(
        TypeError,
        match=r"^<xlocal 'xcurrent'> takes only keyword arguments, as in "
        r"`with xcurrent\(name=value\)`; got 1 positional$",
    ):
        xcurrent({"a": 1})


def test_bad_xlocal_name() -> None:
    """The xlocal's own name must be a string."""
    with pytest.raises(
        TypeError, match=r"^xlocal name must be a str or None, not int$"
    ):
        xlocal(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "action",
    [pickle.dumps, copy.copy, copy.deepcopy],
    ids=["pickle", "copy", "deepcopy"],
)
def test_copy_and_pickle_refused(xcurrent: xlocal, action: Any) -> None:
    """An xlocal cannot be copied or pickled: its bindings belong to executions."""
    with pytest.raises(TypeError, match=r"^cannot copy or pickle <xlocal 'xcurrent'>"):
        action(xcurrent)


@pytest.mark.parametrize(
    "action",
    [pickle.dumps, copy.copy, copy.deepcopy],
    ids=["pickle", "copy", "deepcopy"],
)
def test_binding_copy_and_pickle_refused(xcurrent: xlocal, action: Any) -> None:
    """A binding cannot be copied or pickled; the message says what to do instead."""
    with pytest.raises(
        TypeError,
        match=r"^cannot copy or pickle <Binding xcurrent\(a=\.\.\.\)>: a binding is "
        r"entered by with-statements in this process; make another by calling the "
        r"xlocal, or carry bindings to other processes with xlocal\.portable$",
    ):
        action(xcurrent(a=1))


# -- exits out of order, twice, or elsewhere -------------------------------------------


def test_out_of_order_exit(xcurrent: xlocal) -> None:
    """An outer entry exited first unwinds the inner ones too, then reports it."""
    outer, inner = xcurrent(a=1), xcurrent(a=2, b=2)
    with xcurrent(base=0):
        outer.__enter__()
        inner.__enter__()
        with pytest.raises(
            RuntimeError,
            match=r"^<Binding xcurrent\(a=\.\.\.\)> exited out of order: "
            r"1 binding\(s\) entered after it were still active, innermost "
            r"<Binding xcurrent\(a=\.\.\., b=\.\.\.\)>\.",
        ):
            outer.__exit__(None, None, None)
        assert dir(xcurrent) == ["base"]
        with pytest.raises(RuntimeError, match=r"it is not active in this execution"):
            inner.__exit__(None, None, None)
        assert dir(xcurrent) == ["base"]


def test_generator_inside_with_block(xcurrent: xlocal) -> None:
    """A generator suspended inside its with-block makes the outer exit fail loudly."""

    def gen() -> Any:
        with xcurrent(inner=1):
            yield

    g = gen()
    with (
        pytest.raises(RuntimeError, match=r"exited out of order.*A generator"),
        xcurrent(outer=1),
    ):
        next(g)
    assert dir(xcurrent) == []
    with pytest.raises(RuntimeError, match=r"not active in this execution"):
        g.close()
    assert dir(xcurrent) == []


def test_exit_twice(xcurrent: xlocal) -> None:
    """Exiting an entry a second time is refused and changes nothing."""
    binding = xcurrent(a=1)
    with xcurrent(base=0):
        binding.__enter__()
        binding.__exit__(None, None, None)
        with pytest.raises(
            RuntimeError,
            match=r"^cannot exit <Binding xcurrent\(a=\.\.\.\)>: it is not active in "
            r"this execution\. It was exited already, or entered in another thread, "
            r"greenlet or task \(exit it there\), as when a generator or coroutine "
            r"abandoned there is finalized here\. Nothing was changed$",
        ):
            binding.__exit__(None, None, None)
        assert xcurrent.base == 0


def test_exit_never_entered(xcurrent: xlocal) -> None:
    """Exiting a binding that was never entered is refused."""
    with pytest.raises(RuntimeError, match=r"not active in this execution"):
        xcurrent(a=1).__exit__(None, None, None)


def test_exit_in_another_thread(xcurrent: xlocal) -> None:
    """Exiting in another thread fails there and leaves both threads' bindings."""
    binding = xcurrent(a=1)
    errors: list[BaseException] = []

    def other() -> None:
        with xcurrent(mine=2):
            try:
                binding.__exit__(None, None, None)
            except RuntimeError as e:
                errors.append(e)
            assert xcurrent.mine == 2
            assert not hasattr(xcurrent, "a")

    with binding:
        # In a context of its own, also where threads inherit their creator's.
        t = threading.Thread(target=contextvars.Context().run, args=(other,))
        t.start()
        t.join(10)
        assert xcurrent.a == 1
    assert len(errors) == 1
    assert "not active in this execution" in str(errors[0])


def test_exit_in_another_task(xcurrent: xlocal) -> None:
    """Exiting in a task an entry its creator made fails and changes nothing."""
    binding = xcurrent(a=1)

    async def child() -> None:
        with pytest.raises(
            RuntimeError,
            match=r"^cannot exit <Binding xcurrent\(a=\.\.\.\)> here: it was entered "
            r"in another asyncio task or contextvars.Context, where it is still bound; "
            r"exit it there\. Nothing was changed$",
        ):
            binding.__exit__(None, None, None)
        assert xcurrent.a == 1

    async def main() -> None:
        with binding:
            await asyncio.create_task(child())
            assert xcurrent.a == 1

    asyncio.run(main())


def test_exit_of_an_inherited_entry_exited_already(xcurrent: xlocal) -> None:
    """A snapshot run cannot exit an entry its maker has exited; nothing changes."""
    binding = xcurrent(a=1)
    with binding:
        snapshot = xl.capture()

    def exit_it() -> list[str]:
        with pytest.raises(
            RuntimeError,
            match=r"^cannot exit <Binding xcurrent\(a=\.\.\.\)> here: it was entered "
            r"in another asyncio task or contextvars.Context, and exited there "
            r"already; here it was only inherited, and it ends with this task or "
            r"snapshot run\. Nothing was changed$",
        ):
            binding.__exit__(None, None, None)
        return dir(xcurrent)

    assert snapshot.run(exit_it) == ["a"]
    assert dir(xcurrent) == []


def test_exit_in_a_copy_of_the_context_it_was_entered_in(xcurrent: xlocal) -> None:
    """A generator's with-block entered in one Context and ended in a copy of it is
    refused there, on either core: contextvars cannot reset a variable in a Context
    other than the one that set it.  Nothing is changed in either Context."""
    binding = xcurrent(a=1)

    def steps() -> Iterator[None]:
        with binding:
            yield

    made_in = contextvars.copy_context()
    gen = steps()
    made_in.run(next, gen)
    copied = made_in.run(contextvars.copy_context)
    with pytest.raises(
        RuntimeError,
        match=r"^cannot exit <Binding xcurrent\(a=\.\.\.\)> here: it was entered "
        r"in another asyncio task or contextvars.Context, where it is still bound; "
        r"exit it there\. Nothing was changed$",
    ):
        copied.run(gen.close)
    assert copied.run(dir, xcurrent) == made_in.run(dir, xcurrent) == ["a"]


def test_exit_in_another_task_under_its_own_binding(xcurrent: xlocal) -> None:
    """A task cannot unwind its creator's entry even beneath its own bindings."""
    binding = xcurrent(a=1)

    async def child() -> None:
        with xcurrent(b=2):
            with pytest.raises(RuntimeError, match=r"another asyncio task"):
                binding.__exit__(None, None, None)
            assert (xcurrent.a, xcurrent.b) == (1, 2)

    async def main() -> None:
        with binding:
            await asyncio.create_task(child())

    asyncio.run(main())


# -- no leftovers ----------------------------------------------------------------------


class Value:
    """A bindable object that weak references can watch."""


def test_nothing_kept_after_exit(xcurrent: xlocal) -> None:
    """After the outermost exit no reference to a bound value remains."""
    value = Value()
    ref = weakref.ref(value)
    binding = xcurrent(v=value)
    with binding, xcurrent(w=value):
        pass
    del value, binding
    assert collected(ref)


def test_nothing_stored_when_unbound(xcurrent: xlocal) -> None:
    """Once the last block exits, the context holds no entry for the xlocal at all."""
    var = object.__getattribute__(xcurrent, "_var")
    with xcurrent(a=1):
        assert var in contextvars.copy_context()
    assert var not in contextvars.copy_context()


def test_nothing_kept_after_failed_out_of_order_exit(xcurrent: xlocal) -> None:
    """Values of entries unwound by an out-of-order exit are released."""
    value = Value()
    ref = weakref.ref(value)
    outer, inner = xcurrent(a=1), xcurrent(v=value)
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError):
        outer.__exit__(None, None, None)
    del value, inner
    assert collected(ref)


# -- greenlet without per-greenlet contexts --------------------------------------------

OLD_GREENLET = """
import sys, types
fake = types.ModuleType("greenlet")
fake.__version__ = "0.4.16"
fake.GREENLET_USE_CONTEXT_VARS = False
sys.modules["greenlet"] = fake
import xlocal
"""


def test_greenlet_check_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The greenlet check passes without greenlet and refuses one without contexts."""

    def missing(name: str) -> None:
        raise ImportError(name)

    monkeypatch.setattr(_environment.importlib, "import_module", missing)
    _environment._check_greenlet()
    old = types.SimpleNamespace(GREENLET_USE_CONTEXT_VARS=False)
    monkeypatch.setattr(_environment.importlib, "import_module", lambda name: old)
    with pytest.raises(ImportError, match=r"but greenlet \(unknown version\) is"):
        _environment._check_greenlet()


def test_names_checked_past_the_cache_cap(
    xcurrent: xlocal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the cache of valid names is full, new names are still checked each time."""
    monkeypatch.setattr(_core, "_valid_names", set())
    monkeypatch.setattr(_core, "_VALID_NAMES_CAP", 1)
    with xcurrent(first=1), xcurrent(second=2):
        assert (xcurrent.first, xcurrent.second) == (1, 2)
    assert _core._valid_names == {"first"}
    with pytest.raises(ValueError, match="'_bad'"):
        xcurrent(second=2, _bad=1)


def test_old_greenlet_refused() -> None:
    """Importing xlocal with a greenlet lacking per-greenlet contexts fails clearly."""
    result = python(OLD_GREENLET)
    assert result.returncode == 1
    assert (
        "ImportError: xlocal needs greenlet 0.4.17 or newer, but greenlet 0.4.16 is "
        "installed: it does not give each greenlet its own contextvars.Context"
    ) in result.stderr


def test_greenlet_without_context_support_refused(tmp_path: Any) -> None:
    """A greenlet that does not say it supports contextvars at all (no
    GREENLET_USE_CONTEXT_VARS) is refused at import, as one that says it does not."""
    package = tmp_path / "greenlet"
    package.mkdir()
    (package / "__init__.py").write_text('__version__ = "0.4.13"\n')
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    result = python("import greenlet, xlocal", env={"PYTHONPATH": path})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: xlocal needs greenlet 0.4.17 or newer, but greenlet 0.4.13 is "
        "installed: it does not give each greenlet its own contextvars.Context, so "
        "greenlets would see each other's bindings; upgrade it: "
        "`pip install -U greenlet`"
    )


# -- values die with their execution, without the garbage collector --------------------


@pytest.fixture
def no_collector() -> Any:
    """Turn the cyclic garbage collector off: only reference counting frees."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.cpython_only(
    "values are freed by reference counting, not later by the collector"
)
def test_value_released_when_thread_dies_inside_its_block(
    xcurrent: xlocal, no_collector: None
) -> None:
    """A value bound by an entry its thread never exits is released when the thread
    ends."""
    value = Value()
    ref = weakref.ref(value)

    def run(v: Value) -> None:
        xcurrent(v=v).__enter__()  # never exited: the thread dies inside the block

    t = threading.Thread(target=run, args=(value,))
    del value
    t.start()
    t.join(10)
    del t
    assert ref() is None


@pytest.mark.cpython_only(
    "values are freed by reference counting, not later by the collector"
)
def test_value_released_when_greenlet_dies_inside_its_block(
    xcurrent: xlocal, no_collector: None
) -> None:
    """A value bound in a greenlet that ends inside its block is released at once."""
    greenlet = pytest.importorskip("greenlet")
    value = Value()
    ref = weakref.ref(value)

    def run(v: Value) -> None:
        xcurrent(v=v).__enter__()

    g = greenlet.greenlet(run)
    g.switch(value)
    del value, g
    assert ref() is None


@pytest.mark.cpython_only(
    "values are freed by reference counting, not later by the collector"
)
def test_child_keeps_only_what_it_sees(xcurrent: xlocal, no_collector: None) -> None:
    """A long-lived task started inside a block does not keep its parent's context:
    a value the parent set after starting it is released when the parent finishes."""
    other: contextvars.ContextVar[Value] = contextvars.ContextVar("other")
    ref: list[weakref.ref[Value]] = []

    async def main() -> None:
        release = asyncio.Event()

        async def child() -> None:
            await release.wait()
            assert xcurrent.a == 1

        async def parent() -> asyncio.Task[None]:
            with xcurrent(a=1):
                task = asyncio.create_task(child())
            value = Value()
            ref.append(weakref.ref(value))
            other.set(value)
            return task

        task = await asyncio.create_task(parent())
        await asyncio.sleep(0)
        assert ref[0]() is None  # the parent is done; the child still runs
        release.set()
        await task

    asyncio.run(main())
