"""Portable bindings in one process: inject, extract, carry, codecs and bad carriers."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import os
import pickle
import re
import subprocess
import sys
import threading
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import _portable_app as app
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xlocal
from xlocal import xlocal as make
from xlocal.portable import (
    CARRIER_KEY,
    JSON,
    MAX_CARRIER_SIZE,
    SIGNATURE_KEY,
    Carried,
    CarrierError,
    Extracted,
    UnportableError,
    carry,
    extract,
    inject,
)

if TYPE_CHECKING:  # as a module does for a name it uses only in its annotations
    from _portable_app import PointCodec as TypedPointCodec


def visible() -> dict[str, dict[str, Any]]:
    """Every name bound on the helper module's xlocals, by xlocal."""
    return {
        label: {name: getattr(x, name) for name in dir(x)}
        for label, x in app.ALL.items()
        if dir(x)
    }


@pytest.fixture(autouse=True)
def _helper_xlocals_unbound() -> Any:
    """The helper module's xlocals are unbound before and after each test."""
    assert visible() == {}
    yield
    assert visible() == {}


def carrier_of(payload: Any) -> dict[str, str]:
    """A carrier holding *payload* as JSON text."""
    return {CARRIER_KEY: json.dumps(payload)}


# -- making portable xlocals -----------------------------------------------------------


def test_portable_needs_a_name() -> None:
    """A portable xlocal without a name is refused: the name is the wire key."""
    with pytest.raises(TypeError, match=r"^a portable xlocal needs a name"):
        make(portable=True)
    with pytest.raises(TypeError, match=r"^a portable xlocal needs a name"):
        make("", portable={"a"})


def test_duplicate_portable_name_is_refused() -> None:
    """Two live portable xlocals cannot share a name; a collected one frees it."""
    with pytest.raises(
        ValueError,
        match=r"^a portable xlocal named 'portable_app.request' exists already in "
        r"this process: the name is the key carriers use",
    ):
        make("portable_app.request", portable=True)
    first = make("test_portable.dup", portable=True)
    with pytest.raises(ValueError, match="exists already"):
        make("test_portable.dup", portable={"a"})
    plain = make("test_portable.dup")  # not portable: no conflict
    del first
    gc.collect()
    again = make("test_portable.dup", portable=True)
    assert repr(again) == "<xlocal 'test_portable.dup' unbound>"
    assert repr(plain) == "<xlocal 'test_portable.dup' unbound>"


def test_collected_portable_xlocal_leaves_no_name_behind() -> None:
    """A collected portable xlocal's name leaves the process's registry at once."""
    from xlocal import _registry  # noqa: PLC0415 - the registry is private

    gone = make("test_portable.gone", portable=True)
    assert "test_portable.gone" in _registry._portables
    del gone
    gc.collect()
    assert "test_portable.gone" not in _registry._portables


def test_new_passes_portable_and_codec_on() -> None:
    """new(cls, name, portable=..., codec=...) makes the same xlocal as calling the
    class: its values cross with the codec given."""

    class Shape(make):
        corner: app.Point

    shape = xlocal.new(
        Shape, "test_portable.shape", portable=True, codec=app.PointCodec()
    )
    with shape(corner=app.Point(3, 4)):
        carrier = inject()
    assert json.loads(carrier[CARRIER_KEY])["b"]["test_portable.shape"] == {
        "corner": '{"x": 3, "y": 4}'
    }


@pytest.mark.parametrize(
    ("portable", "error", "message"),
    [
        ("user_id", TypeError, r"must be True or a collection of names, .* not str$"),
        (3, TypeError, r"must be True or a collection of names, .* not int$"),
        (set(), ValueError, r"is empty: name the names"),
        ({"_secret"}, ValueError, r"names '_secret', which cannot be bound"),
        ({"not a name"}, ValueError, r"names 'not a name', which cannot be bound"),
        ({1}, ValueError, r"names 1, which cannot be bound"),
    ],
)
def test_bad_portable_argument(portable: Any, error: type, message: str) -> None:
    """portable= takes True or a collection of bindable names, and says so."""
    with pytest.raises(
        error, match=r"^portable= of xlocal\('test_portable.bad'\) " + message
    ):
        make("test_portable.bad", portable=portable)


def test_bad_codec_argument() -> None:
    """codec= needs encode and decode, and a portable xlocal."""
    with pytest.raises(TypeError, match=r"^codec of xlocal\('c'\) must have encode"):
        make("c", portable=True, codec=json)  # type: ignore[arg-type]

    class EncodeOnly:
        def encode(self, value: object) -> str:
            return repr(value)

    with pytest.raises(
        TypeError,
        match=r"^codec of xlocal\('c'\) must have encode\(value\) -> str and "
        r"decode\(text\) -> value methods; EncodeOnly has not$",
    ):
        make("c", portable=True, codec=EncodeOnly())  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"^xlocal\('c'\) got a codec but is not portable"
    ):
        make("c", codec=JSON)


# -- inject ----------------------------------------------------------------------------


def test_inject_outside_bindings_gives_an_empty_carrier() -> None:
    """With nothing bound, inject gives a carrier of no bindings; it binds nothing."""
    carrier = inject()
    assert carrier == {CARRIER_KEY: '{"b":{},"v":1}'}
    with extract(carrier) as entered:
        assert entered is None
        assert visible() == {}


def test_inject_encodes_only_portable_names() -> None:
    """Only names marked portable reach the carrier; others never appear in it."""
    with (
        app.request(user_id=7, tenant="acme", db="SECRET-DB"),
        app.local_only(key="SECRET-KEY"),
        app.trace(span="s1"),
    ):
        carrier = inject()
    assert list(carrier) == [CARRIER_KEY]
    assert "SECRET" not in carrier[CARRIER_KEY]
    assert json.loads(carrier[CARRIER_KEY]) == {
        "b": {
            "portable_app.request": {"tenant": '"acme"', "user_id": "7"},
            "portable_app.trace": {"span": '"s1"'},
        },
        "v": 1,
    }


def test_inject_fills_a_given_mapping_and_replaces_a_stale_key() -> None:
    """inject(carrier) fills and returns the mapping, replacing an older carrier."""
    headers = {"accept": "text/html", CARRIER_KEY: "stale"}
    with app.request(user_id=1):
        assert inject(headers) is headers
    assert headers["accept"] == "text/html"
    with extract(headers):
        assert visible() == {"request": {"user_id": 1}}
    assert inject(headers) is headers
    assert headers[CARRIER_KEY] == '{"b":{},"v":1}'


def test_inject_refuses_what_is_not_a_mutable_mapping() -> None:
    """inject() says what it fills when given something else."""
    with pytest.raises(
        TypeError, match=r"^inject\(\) fills a mutable mapping of strings, not tuple"
    ):
        inject(())  # type: ignore[call-overload]


def test_carrier_is_printable_ascii_and_deterministic() -> None:
    """Any text value gives printable ASCII, and equal bindings give equal carriers."""
    text = 'é\u2028\x00\x7f\n"\\ 漢'
    with app.trace(b=text, a=[1]):
        first = inject()[CARRIER_KEY]
    with app.trace(a=[1], b=text):
        second = inject()[CARRIER_KEY]
    assert first == second
    assert all(" " <= c <= "~" for c in first)
    with extract({CARRIER_KEY: first}):
        assert app.trace.b == text


def test_dict_values_are_canonical_at_every_depth() -> None:
    """Dicts equal but filled in another order, at any depth, give the same carrier
    (and so the same signature and the same Dask key); they arrive with sorted keys."""
    first = {"b": {"y": 1, "x": [{"q": 1, "p": 2}]}, "a": 0}
    second = {"a": 0, "b": {"x": [{"p": 2, "q": 1}], "y": 1}}
    assert (
        JSON.encode(first)
        == JSON.encode(second)
        == ('{"a":0,"b":{"x":[{"p":2,"q":1}],"y":1}}')
    )
    with app.trace(v=first):
        one = inject(key=b"k")
    with app.trace(v=second):
        two = inject(key=b"k")
    assert one == two
    with extract(one):
        assert app.trace.v == first
        assert list(app.trace.v) == ["a", "b"]
        assert list(app.trace.v["b"]["x"][0]) == ["p", "q"]


def test_json_values_are_compact_and_keep_their_text() -> None:
    """The JSON codec writes compact JSON (no spaces) that keeps non-ASCII text as it
    is, in lists and dicts as in a str; the carrier escapes it once, six characters
    for a non-ASCII character, and a reader in any language gets the text back."""
    value = ["é 漢", {"a": 1.5, "b": None, "c": True}]
    assert JSON.encode("é 漢") == '"é 漢"'
    assert JSON.encode(value) == '["é 漢",{"a":1.5,"b":null,"c":true}]'
    with app.trace(v=value):
        carrier = inject()
    assert carrier[CARRIER_KEY] == (
        r'{"b":{"portable_app.trace":{"v":"[\"\u00e9 \u6f22\",'
        r'{\"a\":1.5,\"b\":null,\"c\":true}]"}},"v":1}'
    )
    assert (
        json.loads(json.loads(carrier[CARRIER_KEY])["b"]["portable_app.trace"]["v"])
        == value
    )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ((1, 2), r"tuple is not a JSON type"),
        (float("nan"), r"nan is not a JSON number"),
        (float("inf"), r"inf is not a JSON number"),
        ({1: "a"}, r"a dict with int keys is not a JSON object"),
        ([{"a": {1, 2}}], r"set is not a JSON type"),
        (b"bytes", r"bytes is not a JSON type"),
        (app.Point(1, 2), r"Point is not a JSON type"),
    ],
)
def test_unencodable_value_fails_at_inject(value: Any, why: str) -> None:
    """A value JSON cannot carry exactly fails at inject, naming xlocal, name, type."""
    with (
        app.trace(v=value),
        pytest.raises(
            UnportableError,
            match=r"^cannot carry 'v' of <xlocal 'portable_app.trace'>: its value, "
            r"of type "
            + type(value).__qualname__
            + r", cannot be encoded by <xlocal.portable.JSON> \("
            + why
            + r"\); bind a value the codec takes",
        ),
    ):
        inject()


def test_unencodable_value_fails_at_carry() -> None:
    """carry encodes at once, so the sender gets the error, never the worker."""
    with (
        app.request(user_id=object()),
        pytest.raises(
            UnportableError,
            match=r"^cannot carry 'user_id' of <xlocal 'portable_app.request'>: its "
            r"value, of type object,",
        ),
    ):
        carry(app.seen)


def test_non_portable_values_are_never_encoded() -> None:
    """An unencodable value under a non-portable name is no error: it stays here.  An
    xlocal with only such names bound is left out of the carrier, which extracts."""
    with app.request(user_id=1, db=object()), app.local_only(x=object()):
        assert "db" not in inject()[CARRIER_KEY]
    with app.request(db=object()):
        carrier = inject()
    assert carrier == {CARRIER_KEY: '{"b":{},"v":1}'}
    with extract(carrier, unknown="error"):
        assert visible() == {}


class CollectingCodec:
    """The JSON codec, collecting garbage first, as any allocation may."""

    def encode(self, value: Any) -> str:
        gc.collect()
        return JSON.encode(value)

    def decode(self, text: str) -> Any:
        return JSON.decode(text)


def test_xlocal_collected_during_inject_is_passed_over() -> None:
    """A portable xlocal collected while inject runs (a collection that an encoding
    triggers) is passed over; the xlocals after it are still carried (inject goes
    through them in the order of their names)."""
    collector = make("test_portable.1collector", portable=True, codec=CollectingCodec())
    enabled = gc.isenabled()
    gc.disable()  # so that only the codec's collection collects the cycle
    try:
        cycle: list[Any] = [make("test_portable.2doomed", portable=True)]
        cycle.append(cycle)
        del cycle
        after = make("test_portable.3after", portable=True)
        with collector(a=1), after(b=2):
            carrier = inject()
    finally:
        if enabled:
            gc.enable()
    assert json.loads(carrier[CARRIER_KEY])["b"] == {
        "test_portable.1collector": {"a": "1"},
        "test_portable.3after": {"b": "2"},
    }


def test_codec_that_returns_no_str_fails_at_inject() -> None:
    """A codec must give str; anything else is the sender's error."""

    class Bad:
        def encode(self, value: Any) -> Any:
            return b"bytes"

        def decode(self, text: str) -> Any:
            return text

    bad = make("test_portable.badcodec", portable=True, codec=Bad())
    with (
        bad(v=1),
        pytest.raises(UnportableError, match=r"\(the codec gave bytes, not str\)"),
    ):
        inject()


def test_inject_refuses_an_oversized_carrier() -> None:
    """A carrier over the limit is refused at inject, naming the largest value."""
    with (
        app.trace(big="x" * MAX_CARRIER_SIZE, small=1),
        pytest.raises(
            CarrierError,
            match=r"^cannot make a carrier of \d+ characters, over the limit of 8000: "
            r"the largest value is portable_app.trace.big \(\d+ characters\); "
            r"carry an id",
        ),
    ):
        inject()
    with app.trace(big="x" * 100):
        with pytest.raises(CarrierError, match="over the limit of 50"):
            inject(limit=50)
        assert len(inject(limit=200)[CARRIER_KEY]) <= 200
    with pytest.raises(
        CarrierError,
        match=r"^cannot make a carrier of 14 characters, over the limit of 13, even "
        r"with nothing bound: raise limit=$",
    ):
        inject(limit=13)
    assert inject(limit=14) == {CARRIER_KEY: '{"b":{},"v":1}'}


def test_carrier_exactly_at_the_limit_is_taken() -> None:
    """A carrier as long as the limit is taken; one character more is refused."""
    with app.trace(big="x" * 100):
        carrier = inject()
    size = len(carrier[CARRIER_KEY])
    with app.trace(big="x" * 100):
        assert inject(limit=size) == carrier
        with pytest.raises(CarrierError, match=rf"over the limit of {size - 1}: "):
            inject(limit=size - 1)
    with extract(carrier, limit=size):
        assert app.trace.big == "x" * 100
    with pytest.raises(CarrierError, match=rf"over the limit of {size - 1}; nothing"):
        extract(carrier, limit=size - 1).__enter__()


# -- extract ---------------------------------------------------------------------------


def test_extract_binds_for_the_block_only() -> None:
    """extract binds the carried names for its with-block, on top of what is bound."""
    with app.request(user_id=7, tenant="acme"):
        headers = inject()
    with app.request(user_id=1, db="here"):
        with extract(headers):
            assert visible() == {
                "request": {"user_id": 7, "tenant": "acme", "db": "here"}
            }
            with app.request(tenant="inner"):
                assert app.request.tenant == "inner"
            assert app.request.tenant == "acme"
        assert visible() == {"request": {"user_id": 1, "db": "here"}}


def test_extract_is_reusable_and_exits_on_errors() -> None:
    """An Extracted may be entered again, nested, and exits when the body raises."""
    with app.request(user_id=7), app.trace(span="s"):
        extracted = extract(inject())
    assert isinstance(extracted, Extracted)
    assert repr(extracted) == (
        "<Extracted portable_app.request(user_id), portable_app.trace(span)>"
    )

    def body() -> None:
        with extracted, extracted:
            assert visible() == {"request": {"user_id": 7}, "trace": {"span": "s"}}
            raise KeyError("boom")

    with pytest.raises(KeyError):
        body()
    assert visible() == {}
    assert repr(extract({})) == "<Extracted (nothing)>"


def test_extracted_exited_out_of_order_exits_all_then_raises() -> None:
    """An Extracted exited with a later entry still active exits all, then says so."""
    with app.request(user_id=7), app.trace(span="s"):
        extracted = extract(inject())
    extracted.__enter__()
    later = app.trace(span="later")
    later.__enter__()
    with pytest.raises(RuntimeError, match=r"exited out of order: 1 binding\(s\)"):
        extracted.__exit__(None, None, None)
    assert visible() == {}


def test_extracted_exit_raises_the_first_failure() -> None:
    """When several of its bindings fail to exit, an Extracted exits all of them and
    raises the first failure, that of the innermost binding."""
    with app.request(user_id=7), app.trace(span="s"):
        extracted = extract(inject())
    extracted.__enter__()
    app.request(user_id=2).__enter__()
    app.trace(span="later").__enter__()
    trace = "<Binding <xlocal 'portable_app.trace'>(span=...)>"
    first = (
        f"{trace} exited out of order: 1 binding(s) entered after it were still "
        f"active, innermost {trace}. A generator suspended inside a with-block, or "
        f"__enter__/__exit__ called by hand, often causes this. All of them have been "
        f"exited, which restores the bindings from before {trace} was entered"
    )
    with pytest.raises(RuntimeError, match=f"^{re.escape(first)}$"):
        extracted.__exit__(None, None, None)
    assert visible() == {}


def test_interrupt_while_entering_leaves_nothing_bound() -> None:
    """A KeyboardInterrupt (a signal) that arrives while an Extracted enters its
    bindings exits those it entered, then goes on: nothing stays bound."""
    with app.request(user_id=7), app.trace(span="s"):
        extracted = extract(inject())
    entering = Extracted._enter_as.__code__

    def interrupt(frame: types.FrameType, event: str, arg: object) -> None:
        # Raised between two steps, as a signal handler's exception is: here, once
        # the first binding is entered and recorded (list.append has returned).
        if event == "c_return" and frame.f_code is entering:
            sys.setprofile(None)
            raise KeyboardInterrupt

    previous = sys.getprofile()
    sys.setprofile(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), extracted:
            pytest.fail("the block ran")
    finally:
        sys.setprofile(previous)
    assert visible() == {}
    assert inject() == {CARRIER_KEY: '{"b":{},"v":1}'}


def test_extracted_entered_by_threads_and_tasks_at_once() -> None:
    """One Extracted entered by several threads at once, and by several tasks at once,
    gives each an entry of its own, on top of its own bindings, exited where it was
    made."""
    with app.request(user_id=7):
        extracted = extract(inject())
    n = 4
    inside = threading.Barrier(n, timeout=60)
    seen: list[tuple[int, Any, Any]] = []

    def run(i: int) -> None:
        with app.trace(span=str(i)):
            with extracted:
                inside.wait()
                during = visible()
            seen.append((i, during, visible()))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    expected = [
        (
            i,
            {"request": {"user_id": 7}, "trace": {"span": str(i)}},
            {"trace": {"span": str(i)}},
        )
        for i in range(n)
    ]
    assert sorted(seen, key=repr) == expected

    async def main() -> list[tuple[int, Any, Any]]:
        entered, everyone = 0, asyncio.Event()

        async def task(i: int) -> tuple[int, Any, Any]:
            nonlocal entered
            with app.trace(span=str(i)):
                async with extracted:
                    entered += 1
                    if entered == n:
                        everyone.set()
                    await everyone.wait()
                    during = visible()
                return i, during, visible()

        return list(await asyncio.gather(*(task(i) for i in range(n))))

    assert asyncio.run(main()) == expected


def test_extract_with_async_with() -> None:
    """An Extracted works with async with too, and exits at the end of the block."""

    async def main() -> Any:
        async with extract(carrier):
            inside = visible()
        return inside, visible()

    with app.request(tenant="t"):
        carrier = inject()
    assert asyncio.run(main()) == ({"request": {"tenant": "t"}}, {})


def test_mapping_without_the_key_binds_nothing() -> None:
    """A mapping without the carrier key (a plain client's headers) binds nothing."""
    with extract({"accept": "text/html"}):
        assert visible() == {}


def test_custom_codec_round_trip() -> None:
    """A codec= carries a dataclass as JSON text and gives it back equal."""
    with app.shape(corner=app.Point(1, 2)):
        carrier = inject()
    assert json.loads(carrier[CARRIER_KEY])["b"] == {
        "portable_app.shape": {"corner": '{"x": 1, "y": 2}'}
    }
    with extract(carrier):
        assert app.shape.corner == app.Point(1, 2)


def test_unknown_xlocal_is_ignored_or_an_error() -> None:
    """An xlocal name this process does not know is ignored, or an error if asked."""
    carrier = carrier_of(
        {"b": {"elsewhere.x": {"a": "1"}, "portable_app.trace": {"t": "2"}}, "v": 1}
    )
    with extract(carrier):
        assert visible() == {"trace": {"t": 2}}
    with pytest.raises(
        CarrierError,
        match=r"^cannot extract bindings from the carrier: it binds names on an xlocal "
        r"named 'elsewhere.x', which is not a portable xlocal in this process: import "
        r"the module that defines it before extracting; nothing was bound$",
    ):
        extract(carrier, unknown="error")
    with pytest.raises(
        ValueError, match=r"^unknown= must be 'ignore' or 'error', not 'no'$"
    ):
        extract(carrier, unknown="no")  # type: ignore[arg-type]


def test_carrier_cannot_reach_non_portable_names() -> None:
    """A carrier naming a non-portable xlocal or name binds nothing there."""
    carrier = carrier_of(
        {
            "b": {
                "portable_app.local_only": {"key": '"forged"'},
                "portable_app.request": {"db": '"forged"', "user_id": "3"},
            },
            "v": 1,
        }
    )
    with extract(carrier):
        assert visible() == {"request": {"user_id": 3}}
    only_db = carrier_of({"b": {"portable_app.request": {"db": "1"}}, "v": 1})
    assert repr(extract(only_db)) == "<Extracted (nothing)>"  # no empty binding
    with pytest.raises(
        CarrierError, match=r"'db' is not portable on <xlocal 'portable_app.request'>"
    ):
        extract(
            carrier_of({"b": {"portable_app.request": {"db": "1"}}, "v": 1}),
            unknown="error",
        )


BROKEN: list[tuple[str, Any, str]] = [
    ("list", [("xlocal", "{}")], r"it is of type list, not a mapping of str"),
    ("str", "xlocal", r"it is of type str, not a mapping of str"),
    ("None", None, r"it is of type NoneType, not a mapping of str"),
    (
        "bytes value",
        {CARRIER_KEY: b"{}"},
        r"its 'xlocal' value is of type bytes, not str",
    ),
    ("int value", {CARRIER_KEY: 1}, r"its 'xlocal' value is of type int, not str"),
    ("bad JSON", {CARRIER_KEY: '{"b": {'}, r"it is not valid JSON \(Expecting"),
    ("empty", {CARRIER_KEY: ""}, r"it is not valid JSON"),
    (
        "pickle as text",
        {CARRIER_KEY: pickle.dumps({"b": {}, "v": 1}).decode("latin-1")},
        r"it holds '\\x80' at character 0, and a carrier is printable ASCII",
    ),
    (
        "non-ASCII text",
        {CARRIER_KEY: '{"b": {"portable_app.trace": {"a": "\\"é\\""}}, "v": 1}'},
        r"it holds '\\xe9' at character \d+, and a carrier is printable ASCII "
        r"\(' ' to '~'; JSON escapes anything else\)",
    ),
    (
        "four-byte characters within the limit",
        {
            CARRIER_KEY: '{"b": {"portable_app.trace": {"a": "\\"%s\\""}}, "v": 1}'
            % ("\U0001f600" * 7900)
        },
        r"it holds '\\U0001f600' at character \d+",
    ),
    (
        "newline between tokens",
        {CARRIER_KEY: '{"b": {},\n"v": 1}'},
        r"it holds '\\n' at character 9",
    ),
    (
        "DEL",
        {CARRIER_KEY: '{"b": {}, "v": 1}\x7f'},
        r"it holds '\\x7f' at character 17",
    ),
    (
        "infinite version",
        {CARRIER_KEY: '{"b": {}, "v": 1e999}'},
        r"it is not valid JSON \(1e999 is not a finite number\)",
    ),
    (
        "pickle bytes",
        {CARRIER_KEY: pickle.dumps({"b": {}, "v": 1})},
        r"its 'xlocal' value is of type bytes, not str",
    ),
    (
        "NaN",
        {CARRIER_KEY: '{"b": {}, "v": NaN}'},
        r"it is not valid JSON \(NaN is not a JSON value\)",
    ),
    (
        "deep",
        {CARRIER_KEY: "[" * 3000 + "]" * 3000},
        r"(it is not valid JSON|it holds no JSON object)",  # by the recursion limit
    ),
    ("array", carrier_of([1]), r"it holds no JSON object"),
    (
        "no version",
        carrier_of({"b": {}}),
        r"its format version is None, and this xlocal reads version 1",
    ),
    ("version 2", carrier_of({"b": {}, "v": 2}), r"its format version is 2, and this"),
    (
        "version '1'",
        carrier_of({"b": {}, "v": "1"}),
        r"its format version is '1', and this",
    ),
    (
        "version true",
        carrier_of({"b": {}, "v": True}),
        r"its format version is True, and this",
    ),
    (
        "no bindings",
        carrier_of({"v": 1}),
        r"it has the fields \['v'\], not \['b', 'v'\]",
    ),
    (
        "extra field",
        carrier_of({"b": {}, "v": 1, "x": 0}),
        r"it has the fields \['b', 'v', 'x'\]",
    ),
    ("bindings list", carrier_of({"b": [], "v": 1}), r"its 'b' field is not an object"),
    (
        "duplicate key",
        {CARRIER_KEY: '{"b": {}, "v": 1, "b": {}}'},
        r"it is not valid JSON \(a key appears twice in one object\)",
    ),
    (
        "group list",
        carrier_of({"b": {"portable_app.trace": ["a"]}, "v": 1}),
        r"the bindings of 'portable_app.trace' are not a non-empty object",
    ),
    (
        "group empty",
        carrier_of({"b": {"portable_app.trace": {}}, "v": 1}),
        r"the bindings of 'portable_app.trace' are not a non-empty object",
    ),
    (
        "value not str",
        carrier_of({"b": {"portable_app.trace": {"a": 1}}, "v": 1}),
        r"the value of 'a' on <xlocal 'portable_app.trace'> is of type int, not an "
        r"encoded str",
    ),
    (
        "private name",
        carrier_of({"b": {"portable_app.trace": {"__class__": "1"}}, "v": 1}),
        r"'__class__' cannot be bound on <xlocal 'portable_app.trace'>",
    ),
    (
        "bad name",
        carrier_of({"b": {"portable_app.trace": {"a b": "1"}}, "v": 1}),
        r"'a b' cannot be bound on <xlocal 'portable_app.trace'>",
    ),
    (
        "keyword name",
        carrier_of({"b": {"portable_app.trace": {"class": "1"}}, "v": 1}),
        r"cannot bind 'class' on <xlocal 'portable_app.trace'>: it is a Python "
        r"keyword, so `<xlocal 'portable_app.trace'>.class` cannot be written; choose "
        r"another name",
    ),
    (
        "bad value",
        carrier_of({"b": {"portable_app.trace": {"a": "{"}}, "v": 1}),
        r"the value of 'a' on <xlocal 'portable_app.trace'> cannot be decoded "
        r"\(Expecting",
    ),
    (
        "NaN value",
        carrier_of({"b": {"portable_app.trace": {"a": "NaN"}}, "v": 1}),
        r"the value of 'a' on <xlocal 'portable_app.trace'> cannot be decoded "
        r"\(NaN is not a JSON value\)",
    ),
    (
        "infinite value in a list",
        carrier_of({"b": {"portable_app.trace": {"a": "[1,-Infinity]"}}, "v": 1}),
        r"the value of 'a' on <xlocal 'portable_app.trace'> cannot be decoded "
        r"\(-Infinity is not a JSON value\)",
    ),
    (
        "overflowing number value",
        carrier_of({"b": {"portable_app.trace": {"a": "1e999"}}, "v": 1}),
        r"the value of 'a' on <xlocal 'portable_app.trace'> cannot be decoded "
        r"\(1e999 is not a finite number\)",
    ),
    (
        "overflowing number in a dict",
        carrier_of({"b": {"portable_app.trace": {"a": '{"x":[-2E+400]}'}}, "v": 1}),
        r"the value of 'a' on <xlocal 'portable_app.trace'> cannot be decoded "
        r"\(-2E\+400 is not a finite number\)",
    ),
    (
        "value with extra data",
        carrier_of({"b": {"portable_app.trace": {"a": "1 2"}}, "v": 1}),
        r"the value of 'a' on <xlocal 'portable_app.trace'> cannot be decoded "
        r"\(Extra data after the value, at character 1\)",
    ),
    (
        "empty value",
        carrier_of({"b": {"portable_app.trace": {"a": ""}}, "v": 1}),
        r"the value of 'a' on <xlocal 'portable_app.trace'> cannot be decoded "
        r"\(Expecting a JSON value at the start\)",
    ),
    (
        "bad codec value",
        carrier_of({"b": {"portable_app.shape": {"c": '{"x": 1}'}}, "v": 1}),
        r"the value of 'c' on <xlocal 'portable_app.shape'> cannot be decoded "
        r"\(.*missing 1 required",
    ),
    (
        "oversized",
        {
            CARRIER_KEY: json.dumps(
                {"b": {"portable_app.trace": {"a": json.dumps("x" * 8000)}}, "v": 1}
            )
        },
        r"it is 80\d\d characters long, over the limit of 8000",
    ),
]


@pytest.mark.parametrize(
    ("carrier", "message"),
    [pytest.param(c, m, id=i) for i, c, m in BROKEN],
)
def test_broken_carrier_is_refused_and_binds_nothing(
    carrier: Any, message: str
) -> None:
    """Each kind of broken carrier raises CarrierError (a ValueError), binds nothing."""
    # A valid part first, so that binding it before checking the rest would show.
    if isinstance(carrier, dict) and isinstance(carrier.get(CARRIER_KEY), str):
        text = carrier[CARRIER_KEY]
        prefix = '{"b": {"portable_app.request": {"user_id": "1"}, '
        if text.startswith('{"b": {') and not text.startswith('{"b": {}'):
            carrier = {CARRIER_KEY: prefix + text[len('{"b": {') :]}
    with app.request(tenant="kept"):
        with (
            pytest.raises(
                CarrierError,
                match=r"^cannot extract bindings from the carrier: "
                + message
                + r".*; nothing was bound$",
            ) as raised,
            extract(carrier),
        ):
            pytest.fail("bound a broken carrier")
        assert isinstance(raised.value, ValueError)
        assert visible() == {"request": {"tenant": "kept"}}


def test_deeply_nested_carrier_is_refused() -> None:
    """Nesting past the recursion limit is a CarrierError, in the carrier or a value."""
    deep = "[" * 200_000 + "]" * 200_000
    with pytest.raises(
        CarrierError,
        match=r"carrier: it is not valid JSON \(it is nested too deeply to decode\)",
    ):
        extract({CARRIER_KEY: deep}, limit=10**6)
    value = json.dumps({"b": {"portable_app.trace": {"a": deep}}, "v": 1})
    with pytest.raises(
        CarrierError,
        match=r"'a' on .* cannot be decoded \(it is nested too deeply to decode\)",
    ):
        extract({CARRIER_KEY: value}, limit=10**6)


SECRET = b"a secret the sender and the receiver share"


def forge(carrier: dict[str, str], user_id: int) -> dict[str, str]:
    """The carrier with request.user_id changed, the rest (a signature) kept."""
    payload = json.loads(carrier[CARRIER_KEY])
    payload["b"]["portable_app.request"]["user_id"] = json.dumps(user_id)
    return {**carrier, CARRIER_KEY: json.dumps(payload)}


def test_signed_carrier_round_trip() -> None:
    """inject(key=) signs the carrier, and extract(key=) binds it."""
    with app.request(user_id=7):
        carrier = inject(key=SECRET)
    assert sorted(carrier) == [CARRIER_KEY, SIGNATURE_KEY]
    assert len(carrier[SIGNATURE_KEY]) == 64
    with extract(carrier, key=SECRET):
        assert visible() == {"request": {"user_id": 7}}
    with extract(carrier):  # a receiver without the key does not check
        assert visible() == {"request": {"user_id": 7}}


def test_tampered_carrier_is_refused_with_a_key() -> None:
    """A changed, unsigned or wrongly signed carrier fails with the key; else binds."""
    with app.request(user_id=7):
        signed = inject(key=SECRET)
        unsigned = inject()
    forged = forge(signed, 0)
    with extract(forged):  # without a key a well-formed carrier is believed
        assert app.request.user_id == 0
    refused = r"its signature is missing or does not match: it was changed, or signed"
    for carrier in (
        forged,
        unsigned,
        {**signed, SIGNATURE_KEY: signed[SIGNATURE_KEY].upper()},
        {**signed, SIGNATURE_KEY: "\udcff"},
        {**signed, SIGNATURE_KEY: 1},
    ):
        with pytest.raises(CarrierError, match=refused):
            extract(carrier, key=SECRET)  # type: ignore[arg-type]
    with pytest.raises(CarrierError, match=refused):
        extract(signed, key=b"another key")
    with pytest.raises(CarrierError, match=refused):
        extract({CARRIER_KEY: "\udcff"}, key=SECRET)
    with extract({}, key=SECRET):  # nothing carried: nothing to check, nothing bound
        assert visible() == {}


def test_signing_key_must_be_bytes() -> None:
    """key= takes non-empty bytes, on both sides."""
    for key in ("text", b"", 3):
        with pytest.raises(
            TypeError, match=r"^key= must be a secret of non-empty bytes"
        ):
            inject(key=key)  # type: ignore[call-overload]
        with pytest.raises(
            TypeError, match=r"^key= must be a secret of non-empty bytes"
        ):
            extract({}, key=key)  # type: ignore[arg-type]


def test_rotated_keys_sign_with_the_first_and_believe_any() -> None:
    """key= takes a sequence while keys are rotated: the first signs, any verifies."""
    old, new = b"old secret", b"new secret"
    with app.request(user_id=7):
        by_old = inject(key=old)
        by_new = inject(key=[new, old])
        by_new_tuple = inject(key=(new,))
    assert by_new == by_new_tuple == inject({}, key=new) | by_new  # the first signs
    assert by_new[SIGNATURE_KEY] != by_old[SIGNATURE_KEY]
    for carrier in (by_old, by_new):
        for keys in ([old, new], (new, old)):
            with extract(carrier, key=keys):
                assert visible() == {"request": {"user_id": 7}}
    refused = r"its signature is missing or does not match"
    with pytest.raises(CarrierError, match=refused):
        extract(by_old, key=[new])  # the old key retired
    with pytest.raises(CarrierError, match=refused):
        extract(forge(by_new, 8), key=[new, old])  # a change is refused by every key


def test_rotated_keys_must_all_be_secrets() -> None:
    """A sequence of keys is non-empty, and every key in it non-empty bytes."""
    for keys, message in (
        ([], r"^key= is an empty sequence: give the secret that signs first"),
        ((), r"^key= is an empty sequence"),
        ([b"k", b""], r"^every secret in key= must be non-empty bytes, not empty byt"),
        ([b"k", "text"], r"^every secret in key= must be non-empty bytes, not str"),
        ([bytearray(b"k")], r"^every secret in key= must be non-empty bytes, not byte"),
        (bytearray(b"k"), r"^key= must be a secret of non-empty bytes, shared"),
    ):
        with pytest.raises(TypeError, match=message):
            inject(key=keys)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=message):
            extract({}, key=keys)  # type: ignore[arg-type]


def test_unsigned_inject_drops_a_stale_signature() -> None:
    """inject without a key removes an older signature from the carrier it fills."""
    with app.request(user_id=7):
        headers = inject(key=SECRET)
    assert inject(headers) is headers
    assert SIGNATURE_KEY not in headers


def test_limit_applies_on_the_receiving_side() -> None:
    """extract's limit refuses a carrier longer than it, and a larger limit reads it."""
    with app.trace(a="x" * 100):
        carrier = inject()
    with pytest.raises(CarrierError, match="over the limit of 50"):
        extract(carrier, limit=50)
    with extract(carrier, limit=200):
        assert app.trace.a == "x" * 100


# -- codecs chosen by declared types -------------------------------------------------


class Noted(make):
    """A typed namespace whose declared types carry metadata that is not a codec."""

    user_id: Annotated[int, "the id of the signed-in user"]
    corner: Annotated[app.Point, app.PointCodec(), "in pixels"]


def test_declared_metadata_that_is_not_a_codec_is_passed_over() -> None:
    """Annotated metadata without both encode and decode (a note, which has encode
    but no decode; another tool's constraint) is no codec: the name keeps the codec
    that the rest of its declared type, or its xlocal, chooses."""
    noted = xlocal.new(Noted, "test_portable.noted", portable=True)
    with noted(user_id=7, corner=app.Point(1, 2)):
        carrier = inject()
    assert json.loads(carrier[CARRIER_KEY])["b"] == {
        "test_portable.noted": {"corner": '{"x": 1, "y": 2}', "user_id": "7"}
    }
    with extract(carrier):
        assert (noted.user_id, noted.corner) == (7, app.Point(1, 2))


class Narrow(make):
    """A typed namespace declaring less than its senders' version does."""

    user: str


def test_names_a_typed_namespace_does_not_declare_are_not_portable() -> None:
    """On a typed namespace made ``portable=True``, the portable names are the
    declared ones: a carrier from a sender whose class declares more (as during a
    rolling deploy) binds what this one declares, and the rest is ignored, or a
    CarrierError with ``unknown="error"``, as for any name that is not portable."""
    narrow = xlocal.new(Narrow, "test_portable.narrow", portable=True)
    sent = {"user": json.dumps("ann"), "tenant": json.dumps("acme")}
    carrier = {CARRIER_KEY: json.dumps({"b": {"test_portable.narrow": sent}, "v": 1})}
    with extract(carrier):
        assert dir(narrow) == ["user"]
        assert narrow.user == "ann"
    with pytest.raises(
        CarrierError,
        match=r"^cannot extract bindings from the carrier: 'tenant' is not portable "
        r"on <Narrow 'test_portable.narrow'>; nothing was bound$",
    ):
        extract(carrier, unknown="error")
    with narrow(user="bob"):
        assert json.loads(inject()[CARRIER_KEY])["b"] == {
            "test_portable.narrow": {"user": '"bob"'}
        }


def declare(annotation: Any, module: str = __name__) -> type[make]:
    """A typed namespace declaring ``corner: annotation``, as made in *module*."""

    def body(namespace: dict[str, Any]) -> None:
        namespace["__module__"] = module
        namespace["__annotations__"] = {"corner": annotation}

    made: type[make] = types.new_class("Typed", (make,), {}, body)
    return made


def test_declared_codec_of_an_evaluated_type() -> None:
    """A declared type that is an object, not a string (a module without ``from
    __future__ import annotations``), chooses its codec all the same."""
    typed = xlocal.new(
        declare(Annotated[app.Point, app.PointCodec()]),
        "test_portable.evaluated",
        portable=True,
    )
    with typed(corner=app.Point(3, 4)):
        carrier = inject()
    assert json.loads(carrier[CARRIER_KEY])["b"] == {
        "test_portable.evaluated": {"corner": '{"x": 3, "y": 4}'}
    }
    with extract(carrier):
        assert typed.corner == app.Point(3, 4)


#: A module without ``from __future__ import annotations``: Python 3.14 defers its
#: class annotations (PEP 649), so the class's ``__dict__`` has no
#: ``__annotations__``; earlier versions evaluate them when the class is made.
DEFERRED = """
from typing import Annotated

import _portable_app as app
from xlocal import xlocal


class Deferred(xlocal):
    corner: Annotated[{corner}, app.PointCodec()]
    size: int = 3


Corner = app.Point
"""

DEFERRED_CASES = [pytest.param("app.Point", id="defined")]
if sys.version_info >= (3, 14):
    DEFERRED_CASES.append(pytest.param("Corner", id="forward reference"))


@pytest.mark.parametrize("corner", DEFERRED_CASES)
def test_declared_codec_without_future_annotations(corner: str) -> None:
    """A codec declared with Annotated in a module that does not make annotations
    strings is used on every version, also when (3.14+) the declared type names
    what the module defines after the class."""
    module = types.ModuleType(f"test_portable_deferred_{len(corner)}")
    # dont_inherit: not this file's own ``from __future__ import annotations``.
    code = compile(
        DEFERRED.format(corner=corner), module.__name__, "exec", dont_inherit=True
    )
    exec(code, module.__dict__)
    cls = module.Deferred
    typed = xlocal.new(cls, f"test_portable.deferred.{corner}", portable=True)
    assert typed.size == 3
    with typed(corner=app.Point(5, 6)):
        carrier = inject()
    assert json.loads(carrier[CARRIER_KEY])["b"] == {
        f"test_portable.deferred.{corner}": {"corner": '{"x": 5, "y": 6}'}
    }
    with extract(carrier):
        assert typed.corner == app.Point(5, 6)


class Unreadable(make):
    """A typed namespace whose declared type names what its module imports only for
    type checkers."""

    corner: Annotated[app.Point, TypedPointCodec()]


@pytest.mark.parametrize(
    ("cls", "annotation", "error"),
    [
        pytest.param(
            Unreadable,
            "Annotated[app.Point, TypedPointCodec()]",
            "NameError: name 'TypedPointCodec' is not defined",
            id="imported for type checkers",
        ),
        pytest.param(
            declare("Annotated[app.Point, app.PointCodec()]", "test_portable.gone"),
            "Annotated[app.Point, app.PointCodec()]",
            "NameError: name 'Annotated' is not defined",
            id="module not imported",
        ),
    ],
)
def test_unreadable_declared_type_is_an_error(
    cls: type[make], annotation: str, error: str
) -> None:
    """A declared type that cannot be evaluated where its class was defined (a name
    imported only under TYPE_CHECKING, a module no longer imported) is an error that
    says so, on the sender and on the receiver, never a silent change of codec."""
    name = f"test_portable.unreadable.{cls.__name__}"  # one per case: PyPy frees late
    typed = xlocal.new(cls, name, portable=True)
    why = (
        rf"cannot read the declared type '{re.escape(annotation)}' of "
        rf"{cls.__name__} to find the codec it chooses: {error}; make the names it "
        rf"uses importable where the class is defined"
    )
    with (
        typed(corner=app.Point(1, 2)),
        pytest.raises(UnportableError, match=f"^{why}$"),
    ):
        inject()
    carrier = carrier_of({"b": {name: {"corner": "{}"}}, "v": 1})
    with pytest.raises(
        CarrierError,
        match=r"^cannot extract bindings from the carrier: the value of 'corner' on "
        rf"<{cls.__name__} '{re.escape(name)}'> cannot be decoded \({why}\); "
        r"nothing was bound$",
    ):
        extract(carrier)


class CountedCodec(app.PointCodec):
    """A codec that counts how many of it are made."""

    made = 0

    def __init__(self) -> None:
        CountedCodec.made += 1


def test_declared_codec_is_made_once() -> None:
    """A declared type is read at its class's first carrier, once: the codec it makes
    serves every carrier after, as one made with the class would."""

    class Counted(make):
        corner: Annotated[app.Point, CountedCodec()]

    counted = xlocal.new(Counted, "test_portable.counted", portable=True)
    before = CountedCodec.made
    for n in range(3):
        with counted(corner=app.Point(n, n)):
            carrier = inject()
        with extract(carrier):
            assert counted.corner == app.Point(n, n)
    assert CountedCodec.made == before + 1


# -- carry, in this process ------------------------------------------------------------


def test_carry_keeps_metadata_and_pickles() -> None:
    """carry keeps name, docstring and __wrapped__, and pickles with its carrier."""
    with app.request(user_id=5):
        carried = carry(app.seen)
    assert isinstance(carried, Carried)
    assert carried.__name__ == "seen"  # type: ignore[attr-defined]
    assert carried.__doc__ == app.seen.__doc__
    assert carried.__wrapped__ is app.seen  # type: ignore[attr-defined]
    assert dict(carried.carrier) == {
        CARRIER_KEY: '{"b":{"portable_app.request":{"user_id":"5"}},"v":1}'
    }
    again = pickle.loads(pickle.dumps(carried))
    assert again.__name__ == "seen"
    assert again(1, k=2)["bound"] == {"request": {"user_id": 5}}
    assert repr(carried).startswith("<Carried <function seen at ")


def test_carry_takes_a_limit() -> None:
    """carry's limit= bounds the carrier it makes now, as inject's does, and the one
    each call reads."""
    big = "x" * MAX_CARRIER_SIZE
    with app.trace(big=big):
        with pytest.raises(CarrierError, match=r"over the limit of 8000: the largest"):
            carry(app.seen)
        carried = carry(app.seen, limit=2 * MAX_CARRIER_SIZE)
    assert carried()["bound"] == {"trace": {"big": big}}
    with (
        app.trace(big="x" * 100),
        pytest.raises(
            CarrierError,
            match=r"^cannot make a carrier of \d+ characters, over the limit of 50: ",
        ),
    ):
        carry(app.seen, limit=50)


def test_carried_call_sees_only_the_captured_portable_bindings() -> None:
    """A carried call runs in a fresh context: captured portable names, nothing else."""
    with app.request(user_id=5, db="conn"), app.local_only(k=1):
        carried = carry(app.seen)
        with app.trace(later=1):
            assert carried("a", b=1)["bound"] == {"request": {"user_id": 5}}
        result = carry(app.nested)("inner")
    assert result["inner"]["bound"] == {"request": {"user_id": 5, "tenant": "inner"}}
    assert result["after"]["bound"] == {"request": {"user_id": 5}}
    assert carried()["bound"] == {"request": {"user_id": 5}}


def test_carried_call_that_raises_leaves_nothing_bound() -> None:
    """A carried function's exception passes through; its bindings are gone after."""
    with app.request(user_id=9):
        carried = carry(app.fail)
    with pytest.raises(ValueError, match=r"^boom for 9$"):
        carried("boom")
    assert visible() == {}


def test_carry_refuses_what_would_lose_its_bindings() -> None:
    """carry refuses non-callables and coroutine or generator functions."""

    async def coro() -> None:
        pass

    def gen() -> Any:
        yield

    with pytest.raises(TypeError, match=r"^carry\(\) takes a callable, not int$"):
        carry(3)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"is a coroutine function: the bindings would end"
    ):
        carry(coro)
    with pytest.raises(
        TypeError, match=r"is a generator function: the bindings would end"
    ):
        carry(gen)
    with pytest.raises(ValueError, match=r"^unknown= must be 'ignore' or 'error'"):
        carry(app.seen, unknown="never")  # type: ignore[arg-type]


class _Steps:
    """Generator and async generator functions in the forms other than a function."""

    def rows(self) -> Iterator[int]:
        yield 1

    async def stream(self) -> AsyncIterator[int]:
        yield 1

    def __call__(self) -> Iterator[int]:
        yield 1


async def _stream() -> AsyncIterator[int]:
    yield 1


def _rows() -> Iterator[int]:
    yield 1


MADE_BY = {
    "generator function": (_rows, "generator"),
    "partial of a generator function": (functools.partial(_rows), "generator"),
    "generator method": (_Steps().rows, "generator"),
    "object with a generator __call__": (_Steps(), "generator"),
    "async generator function": (_stream, "async generator"),
    "partial of an async generator function": (
        functools.partial(_stream),
        "async generator",
    ),
    "async generator method": (_Steps().stream, "async generator"),
}


@pytest.mark.parametrize(("func", "made"), MADE_BY.values(), ids=MADE_BY)
def test_carry_refuses_generator_functions_in_every_form(
    func: Callable[[], Any], made: str
) -> None:
    """carry() tells what a callable makes however it is wrapped (partial, method,
    object), and refuses generator and async generator functions."""
    with pytest.raises(
        TypeError, match=f"is a {made} function: the bindings would end before"
    ):
        carry(func)


def test_import_xlocal_loads_no_coder() -> None:
    """import xlocal loads neither xlocal.portable nor json nor multiprocessing."""
    probe = (
        "import sys, xlocal; "
        "print([m for m in ('xlocal.portable', 'json', 'multiprocessing') "
        "if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == "[]\n"


def test_public_names() -> None:
    """xlocal.portable exports its documented names."""
    names = [
        "CARRIER_KEY",
        "Carried",
        "CarrierError",
        "Codec",
        "Extracted",
        "FORMAT_VERSION",
        "JSON",
        "JSONCodec",
        "Key",
        "MAX_CARRIER_SIZE",
        "SIGNATURE_KEY",
        "UnportableError",
        "carry",
        "extract",
        "inject",
    ]
    assert sorted(xlocal.portable.__all__) == names
    assert all(hasattr(xlocal.portable, name) for name in names)


# -- properties ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
    ),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1, 1.0 and True differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(value=json_values, other=json_values)
def test_any_json_value_round_trips(value: Any, other: Any) -> None:
    """Any JSON value comes back from inject and extract equal and of the same type."""
    with app.trace(value=value), app.request(user_id=other):
        carrier = inject(limit=10**7)
    with extract(carrier, limit=10**7):
        assert same(app.trace.value, value)
        assert same(app.request.user_id, other)


@given(
    carrier=st.one_of(
        st.dictionaries(st.text(), st.text()),
        st.builds(lambda t: {CARRIER_KEY: t}, st.text()),
        st.builds(lambda v: {CARRIER_KEY: json.dumps(v)}, json_values),
        st.builds(
            lambda b, v: {CARRIER_KEY: json.dumps({"b": b, "v": v})},
            st.dictionaries(
                st.sampled_from(["portable_app.trace", "portable_app.request", "x"]),
                json_values,
            ),
            st.sampled_from([1, 2, "1"]),
        ),
        st.binary(),
        json_values,
    )
)
def test_garbage_is_refused_or_binds_only_portable_names(carrier: Any) -> None:
    """Arbitrary input raises CarrierError, or binds only portable names, never more."""
    try:
        extracted = extract(carrier)
    except CarrierError:
        assert visible() == {}
        return
    with extracted:
        seen = visible()
    assert set(seen) <= {"trace", "request"}
    assert set(seen.get("request", {})) <= {"user_id", "tenant"}
    assert visible() == {}


@given(text=st.text(), signature=st.text())
def test_with_a_key_garbage_is_always_refused(text: str, signature: str) -> None:
    """With a key, any carrier value and signature inject did not make is refused."""
    with pytest.raises(CarrierError):
        extract({CARRIER_KEY: text, SIGNATURE_KEY: signature}, key=SECRET)
    assert visible() == {}
