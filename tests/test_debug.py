"""Debug mode: errors name where bindings were entered and where the bad exit was."""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import xlocal
from xlocal import Binding
from xlocal._core import _plain_enter

HERE = os.path.basename(__file__)


def line() -> int:
    """The line number of the caller."""
    return sys._getframe(1).f_lineno


@pytest.fixture
def debug() -> Iterator[None]:
    """Debug mode on for one test."""
    xlocal.set_debug(True)
    yield
    xlocal.set_debug(False)


def test_off_by_default_and_costs_nothing() -> None:
    """Debug mode is off unless asked for, and then entering is the plain code."""
    assert not xlocal.get_debug()
    assert Binding.__enter__ is _plain_enter


def test_turned_on_and_off(debug: None) -> None:
    """set_debug turns debug mode on and off."""
    assert xlocal.get_debug()
    assert Binding.__enter__ is not _plain_enter
    xlocal.set_debug(False)
    assert not xlocal.get_debug()
    xlocal.set_debug()
    assert xlocal.get_debug()


ON = ["1", "true", "TRUE", "yes", "On", " on "]
OFF = ["", "0", "false", "False", "no", "NO", "off"]


@pytest.mark.parametrize(
    ("value", "expected"), [(v, "True") for v in ON] + [(v, "False") for v in OFF]
)
def test_environment_variable(value: str, expected: str) -> None:
    """XLOCAL_DEBUG turns debug mode on at import for 1/true/yes/on in any case, and
    leaves it off for 0/false/no/off and empty."""
    result = subprocess.run(
        [sys.executable, "-c", "import xlocal; print(xlocal.get_debug())"],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        env={**os.environ, "XLOCAL_DEBUG": value},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == expected


@pytest.mark.parametrize("value", ["2", "debug", "enabled", "y"])
def test_environment_variable_not_understood(value: str) -> None:
    """Any other XLOCAL_DEBUG value makes the import fail, saying what is accepted."""
    result = subprocess.run(
        [sys.executable, "-c", "import xlocal"],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        env={**os.environ, "XLOCAL_DEBUG": value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"ValueError: XLOCAL_DEBUG={value!r} is not understood: set it to 1, true, "
        f"yes or on to turn debug mode on, or to 0, false, no, off or nothing to "
        f"leave it off"
    )


def test_bindings_read_the_same(debug: None, xcurrent: xlocal.xlocal) -> None:
    """What debug mode records is invisible to reads, dir, repr and snapshots."""
    with xcurrent(a=1), xcurrent(b=2):
        assert (xcurrent.a, xcurrent.b) == (1, 2)
        assert dir(xcurrent) == ["a", "b"]
        assert repr(xcurrent) == "<xlocal 'xcurrent' bound: a, b>"
        assert dict(xlocal.capture().bindings(xcurrent)) == {"a": 1, "b": 2}


def test_with_as_gives_the_xlocal(debug: None, xcurrent: xlocal.xlocal) -> None:
    """In debug mode ``with x(...) as y`` gives the xlocal itself, as with debug mode
    off, for a with-statement and an async with-statement."""
    with xcurrent(a=1) as y:
        assert y is xcurrent
    xlocal.set_debug(False)
    with xcurrent(a=1) as plain:
        assert plain is xcurrent
    xlocal.set_debug(True)

    async def main() -> Any:
        async with xcurrent(a=1) as z:
            return z

    assert asyncio.run(main()) is xcurrent


def test_each_with_statement_exits_its_own_entry(
    debug: None, xcurrent: xlocal.xlocal
) -> None:
    """In debug mode, as without it, an entry belongs to the with-statement that made
    it: a suspended generator and its consumer entering the same binding each exit
    their own entry, in order."""
    binding = xcurrent(a=1)

    def steps() -> Iterator[int]:
        with binding:
            yield xcurrent.a

    gen = steps()
    assert next(gen) == 1
    with binding:
        assert xcurrent.a == 1
    assert xcurrent.a == 1  # the generator's entry is still open
    gen.close()
    assert dir(xcurrent) == []


def test_out_of_order_names_every_place(debug: None, xcurrent: xlocal.xlocal) -> None:
    """An out-of-order exit names where both entries and the bad exit were."""
    outer, inner = xcurrent(a=1), xcurrent(b=2)
    outer.__enter__()
    outer_line = line() - 1
    inner.__enter__()
    inner_line = line() - 1
    with pytest.raises(RuntimeError) as info:
        outer.__exit__(None, None, None)
    exit_line = line() - 1
    message = str(info.value)
    assert message.startswith(
        f"<Binding xcurrent(a=...)> (entered at {__file__}:{outer_line} in "
        f"test_out_of_order_names_every_place) exited out of order: 1 binding(s) "
        f"entered after it were still active, innermost <Binding xcurrent(b=...)> "
        f"(entered at {__file__}:{inner_line} in test_out_of_order_names_every_place)."
    )
    assert message.endswith(
        f". The exit was at {__file__}:{exit_line} in "
        f"test_out_of_order_names_every_place"
    )


def test_async_with_entries_name_their_place(
    debug: None, xcurrent: xlocal.xlocal
) -> None:
    """An entry made by ``async with`` is named by where it was made, as one made by
    ``with`` is."""
    outer, inner = xcurrent(a=1), xcurrent(b=2)

    async def main() -> tuple[int, int, str]:
        await outer.__aenter__()
        outer_line = line() - 1
        await inner.__aenter__()
        inner_line = line() - 1
        try:
            await outer.__aexit__(None, None, None)
        except RuntimeError as error:
            return outer_line, inner_line, str(error)
        raise AssertionError("the out-of-order exit was not refused")

    outer_line, inner_line, message = asyncio.run(main())
    assert message.startswith(
        f"<Binding xcurrent(a=...)> (entered at {__file__}:{outer_line} in main) "
        f"exited out of order: 1 binding(s) entered after it were still active, "
        f"innermost <Binding xcurrent(b=...)> (entered at {__file__}:{inner_line} in "
        f"main)."
    )


def test_async_with_entries_record_no_place_when_off(xcurrent: xlocal.xlocal) -> None:
    """With debug mode off, ``async with`` entries record no place, as ``with`` ones."""
    outer, inner = xcurrent(a=1), xcurrent(b=2)

    async def main() -> str:
        await outer.__aenter__()
        await inner.__aenter__()
        try:
            await outer.__aexit__(None, None, None)
        except RuntimeError as error:
            return str(error)
        raise AssertionError("the out-of-order exit was not refused")

    assert not xlocal.get_debug()
    message = asyncio.run(main())
    assert message.startswith(
        "<Binding xcurrent(a=...)> exited out of order: 1 binding(s) entered after it "
        "were still active, innermost <Binding xcurrent(b=...)>."
    )
    assert "entered at" not in message


def test_generator_leak_names_the_generator(
    debug: None, xcurrent: xlocal.xlocal
) -> None:
    """The classic generator mistake names the with-block inside the generator."""

    def gen() -> Iterator[None]:
        with xcurrent(inner=1):
            yield

    g = gen()
    with (
        pytest.raises(RuntimeError, match=rf"\(entered at .*{HERE}:\d+ in gen\)"),
        xcurrent(outer=1),
    ):
        next(g)
    with pytest.raises(RuntimeError, match=r"last entered at .* in gen\)"):
        g.close()


def test_exit_in_another_thread_names_the_entry(
    debug: None, xcurrent: xlocal.xlocal
) -> None:
    """An exit in another thread names where the binding was last entered."""
    binding = xcurrent(a=1)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            binding.__exit__(None, None, None)
        except RuntimeError as e:
            errors.append(e)

    with binding:
        entry_line = line() - 1
        t = threading.Thread(target=contextvars.Context().run, args=(other,))
        t.start()
        t.join(60)
    assert (
        f"cannot exit <Binding xcurrent(a=...)> (last entered at {__file__}:"
        f"{entry_line} in test_exit_in_another_thread_names_the_entry): it is not "
        f"active in this execution"
    ) in str(errors[0])
    assert " in other" in str(errors[0]).rsplit("The exit was at", 1)[1]


def test_exit_in_another_task_names_the_entry(
    debug: None, xcurrent: xlocal.xlocal
) -> None:
    """An exit in a task of a binding its creator entered names the creator's entry."""
    binding = xcurrent(a=1)

    async def child() -> str:
        try:
            binding.__exit__(None, None, None)
        except RuntimeError as e:
            return str(e)
        return "no error"

    async def main() -> str:
        with binding:
            return await asyncio.create_task(child())

    message = asyncio.run(main())
    assert message.startswith("cannot exit <Binding xcurrent(a=...)> (entered at ")
    assert message.endswith(" in child")


def test_places_are_not_misattributed(xcurrent: xlocal.xlocal) -> None:
    """An entry made with debug mode off never shows a place copied from its parent."""
    xlocal.set_debug(True)
    try:
        outer = xcurrent(a=1)
        outer.__enter__()
        xlocal.set_debug(False)
        inner = xcurrent(b=2)
        inner.__enter__()
        with pytest.raises(RuntimeError) as info:
            outer.__exit__(None, None, None)
    finally:
        xlocal.set_debug(False)
    message = str(info.value)
    assert "<Binding xcurrent(a=...)> (entered at " in message
    assert "innermost <Binding xcurrent(b=...)>. " in message


def test_decorator_entries_point_at_the_caller(
    debug: None, xcurrent: xlocal.xlocal
) -> None:
    """A binding entered by a decorated function is placed at the decorated call."""
    seen: list[Any] = []

    @xcurrent(a=1)
    def handler() -> None:
        seen.append(xcurrent(b=2).__enter__)  # keep a bound method, enter nothing

    handler()
    binding = xcurrent(a=1)
    decorated = binding(lambda: None)
    decorated()
    call_line = line() - 1
    with pytest.raises(RuntimeError, match=rf"last entered at .*:{call_line} in "):
        binding.__exit__(None, None, None)


def test_decorated_generator_function_enters_only_when_stepped(
    debug: None, xcurrent: xlocal.xlocal
) -> None:
    """Calling a generator function decorated with a binding does not enter it, so a
    stray exit before the generator runs names no place the binding was entered."""
    binding = xcurrent(a=1)

    @binding
    def gen() -> Iterator[int]:
        yield xcurrent.a

    steps = gen()
    exit_line = line() + 8
    with pytest.raises(
        RuntimeError,
        match=r"^cannot exit <Binding xcurrent\(a=\.\.\.\)>: it is not active in "
        r"this execution\. .* Nothing was changed\. The exit was at "
        + re.escape(f"{__file__}:{exit_line} in ")
        + r"test_decorated_generator_function_enters_only_when_stepped$",
    ):
        binding.__exit__(None, None, None)
    assert list(steps) == [1]
