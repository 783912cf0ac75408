"""The carrier reader, property-tested against an independent strict decoder.

A carrier is untrusted input.  For every text, ``extract`` must either bind exactly
what the format says the text holds, which for a carrier that ``inject`` made is what
the sender had bound, or raise CarrierError and bind nothing.  What the format says is
decided here by a decoder written from RFC 8259 and the README's carrier section, that
shares no code with ``xlocal.portable``: printable ASCII, strict JSON (no NaN, no
Infinity, no number that is not finite, no duplicate key, nothing around the value),
``{"b": {xlocal name: {name: JSON text}}, "v": 1}``.

The texts are carriers of random bindings, those carriers changed a few characters at a
time, and carriers built from forged parts.
"""

from __future__ import annotations

import json
import json.scanner
import keyword
import math
from typing import Any, ClassVar

import _portable_app as app
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from xlocal.portable import (
    CARRIER_KEY,
    MAX_CARRIER_SIZE,
    SIGNATURE_KEY,
    CarrierError,
    extract,
    inject,
)

#: The xlocals whose names the generated carriers use, by their portable name.  Both
#: use the JSON codec: trace carries every name, request only user_id and tenant.
KNOWN = {"portable_app.trace": app.trace, "portable_app.request": app.request}
PORTABLE = {"portable_app.trace": None, "portable_app.request": {"user_id", "tenant"}}


class InvalidError(Exception):
    """The reference decoder's refusal."""


# -- the reference decoder -------------------------------------------------------------


class StrictJSON:
    """RFC 8259 JSON text, one value with nothing around it, read by hand."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    @classmethod
    def read(cls, text: str) -> Any:
        reader = cls(text)
        value = reader.value()
        if reader.at != len(text):
            raise InvalidError("extra data")
        return value

    def peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def space(self) -> None:
        while self.peek() in (" ", "\t", "\n", "\r") and self.peek():
            self.at += 1

    def expect(self, literal: str) -> None:
        if not self.text.startswith(literal, self.at):
            raise InvalidError(f"expected {literal!r}")
        self.at += len(literal)

    def value(self) -> Any:
        c = self.peek()
        if c == "{":
            return self.object()
        if c == "[":
            return self.array()
        if c == '"':
            return self.string()
        for literal, meaning in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(literal, self.at):
                self.at += len(literal)
                return meaning
        return self.number()

    def object(self) -> dict[str, Any]:
        self.expect("{")
        result: dict[str, Any] = {}
        self.space()
        if self.peek() == "}":
            self.at += 1
            return result
        while True:
            self.space()
            if self.peek() != '"':
                raise InvalidError("expected a key")
            key = self.string()
            if key in result:
                raise InvalidError("duplicate key")
            self.space()
            self.expect(":")
            self.space()
            result[key] = self.value()
            self.space()
            if self.peek() == ",":
                self.at += 1
                continue
            self.expect("}")
            return result

    def array(self) -> list[Any]:
        self.expect("[")
        result: list[Any] = []
        self.space()
        if self.peek() == "]":
            self.at += 1
            return result
        while True:
            self.space()
            result.append(self.value())
            self.space()
            if self.peek() == ",":
                self.at += 1
                continue
            self.expect("]")
            return result

    ESCAPES: ClassVar[dict[str, str]] = {
        '"': '"',
        "\\": "\\",
        "/": "/",
        "b": "\b",
        "f": "\f",
        "n": "\n",
        "r": "\r",
        "t": "\t",
    }

    def hex4(self) -> int:
        digits = self.text[self.at : self.at + 4]
        if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
            raise InvalidError("bad \\u escape")
        self.at += 4
        return int(digits, 16)

    def string(self) -> str:
        self.expect('"')
        out: list[str] = []
        while True:
            c = self.peek()
            if not c:
                raise InvalidError("unterminated string")
            self.at += 1
            if c == '"':
                return "".join(out)
            if ord(c) < 0x20:
                raise InvalidError("control character in a string")
            if c != "\\":
                out.append(c)
                continue
            e = self.peek()
            self.at += 1
            if e in self.ESCAPES:
                out.append(self.ESCAPES[e])
            elif e == "u":
                code = self.hex4()
                # A high surrogate and a low one escaped after it are one character;
                # a lone surrogate stays as it is (as Python's json reads it).
                if 0xD800 <= code <= 0xDBFF and self.text.startswith("\\u", self.at):
                    mark = self.at
                    self.at += 2
                    try:
                        low = self.hex4()
                    except InvalidError:
                        low = -1
                    if 0xDC00 <= low <= 0xDFFF:
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    else:
                        self.at = mark
                out.append(chr(code))
            else:
                raise InvalidError("bad escape")

    def digits(self) -> str:
        start = self.at
        while self.peek() in "0123456789" and self.peek():
            self.at += 1
        return self.text[start : self.at]

    def number(self) -> int | float:
        start = self.at
        if self.peek() == "-":
            self.at += 1
        whole = self.digits()
        if not whole or (len(whole) > 1 and whole[0] == "0"):
            raise InvalidError("bad number")
        fraction = exponent = False
        if self.peek() == ".":
            self.at += 1
            fraction = True
            if not self.digits():
                raise InvalidError("bad fraction")
        if self.peek() in ("e", "E") and self.peek():
            self.at += 1
            exponent = True
            if self.peek() in ("+", "-") and self.peek():
                self.at += 1
            if not self.digits():
                raise InvalidError("bad exponent")
        text = self.text[start : self.at]
        if not (fraction or exponent):
            try:
                return int(text)
            except ValueError:  # past the interpreter's limit on digits
                raise InvalidError("too many digits") from None
        value = float(text)
        if not math.isfinite(value):
            raise InvalidError("not finite")
        return value


def reference(  # noqa: PLR0912 - the format's rules, one after the other
    text: str, limit: int = MAX_CARRIER_SIZE
) -> dict[str, dict[str, Any]]:
    """What the carrier value *text* binds, by xlocal name; InvalidError if nothing."""
    if len(text) > limit or any(not " " <= c <= "~" for c in text):
        raise InvalidError("not a printable ASCII text within the limit")
    payload = StrictJSON.read(text)
    if type(payload) is not dict or set(payload) != {"b", "v"}:
        raise InvalidError("not the carrier's object")
    if type(payload["v"]) is not int or payload["v"] != 1:
        raise InvalidError("another version")
    if type(payload["b"]) is not dict:
        raise InvalidError("no bindings object")
    bound: dict[str, dict[str, Any]] = {}
    for xname, values in payload["b"].items():
        if type(values) is not dict or not values:
            raise InvalidError("empty or not an object")
        if xname not in KNOWN:
            continue  # an xlocal this process does not know: ignored
        portable = PORTABLE[xname]
        decoded: dict[str, Any] = {}
        for name, encoded in values.items():
            if type(encoded) is not str:
                raise InvalidError("an encoded value that is not a string")
            if not name.isidentifier() or name.startswith("_"):
                raise InvalidError("not a name")
            if portable is not None and name not in portable:
                continue
            if keyword.iskeyword(name) or not bindable(name):
                raise InvalidError("a name the core refuses")
            decoded[name] = StrictJSON.read(encoded)
        if decoded:
            bound[xname] = decoded
    return bound


def bindable(name: str) -> bool:
    """Whether the core binds *name* (its own rules, tested elsewhere)."""
    try:
        app.trace(**{name: None})
    except (TypeError, ValueError):
        return False
    return True


# -- the property ----------------------------------------------------------------------


def typed(value: Any) -> Any:
    """*value* with every type shown, so that 1, 1.0 and True differ."""
    if type(value) is dict:
        return ("dict", sorted((k, typed(v)) for k, v in value.items()))
    if type(value) is list:
        return ("list", [typed(v) for v in value])
    if type(value) is float:
        return ("float", repr(value))
    return (type(value).__name__, value)


def seen() -> dict[str, Any]:
    """Every name bound on the two xlocals, typed, by portable name."""
    return {
        xname: typed({name: getattr(x, name) for name in dir(x)})
        for xname, x in KNOWN.items()
        if dir(x)
    }


def check(text: str) -> None:
    """extract binds exactly what the reference reads in *text*, or nothing."""
    for xname in _other_portables(text):
        assume(xname in KNOWN)  # a name of another test's xlocal: not this property's
    assert seen() == {}
    try:
        expected: dict[str, Any] | None = {
            xname: typed(values) for xname, values in reference(text).items()
        }
    except InvalidError:
        expected = None
    except RecursionError:  # nested past the stack: refused either way
        expected = None
    try:
        extracted = extract({CARRIER_KEY: text})
    except CarrierError:
        assert expected is None, f"refused what the format allows: {text!r}"
        assert seen() == {}
        return
    assert expected is not None, f"read what the format refuses: {text!r}"
    with extracted:
        assert seen() == expected
    assert seen() == {}


def _other_portables(text: str) -> list[str]:
    """The xlocal names a carrier text names that other modules made portable."""
    from xlocal._registry import _portables  # noqa: PLC0415 - the test's one peek

    try:
        payload = json.loads(text)
    except ValueError:
        return []
    groups = payload.get("b") if type(payload) is dict else None
    if type(groups) is not dict:
        return []
    return [name for name in groups if name in _portables and name not in KNOWN]


# -- the texts -------------------------------------------------------------------------

names = st.sampled_from(["a", "user_id", "tenant", "b", "é", "match", "zz9"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
bindings = st.fixed_dictionaries(
    {
        "trace": st.dictionaries(names, json_values, max_size=3),
        "request": st.dictionaries(
            st.sampled_from(["user_id", "tenant", "db"]), json_values, max_size=3
        ),
    }
)


def honest(chosen: dict[str, dict[str, Any]]) -> str:
    """The carrier value that inject makes for *chosen*."""
    with app.trace(**chosen["trace"]), app.request(**chosen["request"]):
        return inject()[CARRIER_KEY]


#: Characters that make and break JSON, and some that no carrier may hold.
EDIT_ALPHABET = '{}[]",:\\/ u0123456789abcdefABCDEF.-+eEtrnl_x\t\né\u0663\x7f\ud800'


@st.composite
def edited(draw: st.DrawFn) -> str:
    """An honest carrier changed at one to four places."""
    text = honest(draw(bindings))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["insert", "delete", "replace", "escape"]))
        piece = draw(st.text(EDIT_ALPHABET, min_size=1, max_size=3))
        if how == "insert":
            text = text[:at] + piece + text[at:]
        elif how == "delete":
            text = text[:at] + text[at + len(piece) :]
        elif how == "replace":
            text = text[:at] + piece + text[at + len(piece) :]
        else:  # a \u escape, well-formed or not
            escape = draw(st.sampled_from(["\\u0041", "\\u+041", "\\u 41 ", "\\ud83d"]))
            text = text[:at] + escape + text[at:]
    return text


value_texts = (
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False))
    | st.sampled_from(
        [
            "1e999",
            "-1E400",
            "NaN",
            "[Infinity]",
            "1\u0663",
            "0.\u0663",
            '"\\u+041"',
            '"\\u0041"',
            '"\\ud83d\\ude00"',
            '"\\ud83d"',
            "01",
            "1.",
            " 1",
            "1 ",
            "[1,]",
            '{"a":1,"a":2}',
            "-0",
            "1E+2",
            "tru",
            '"\t"',
        ]
    )
    | st.text(max_size=8)
)
forged_groups = st.dictionaries(
    st.sampled_from([*KNOWN, "nobody.knows"]),
    st.dictionaries(
        names | st.sampled_from(["db", "class", "_x", "a b", "ﬁ", ""]),
        value_texts | st.integers(),
        max_size=3,
    ),
    max_size=2,
)


@st.composite
def forged(draw: st.DrawFn) -> str:
    """A carrier built from forged parts, written as some other JSON writer would."""
    payload: Any = {
        "b": draw(forged_groups | st.sampled_from([[], None, "x"])),
        "v": draw(st.sampled_from([1, 1, 1, 2, "1", 1.0, True, 1e999])),
    }
    if draw(st.booleans()):
        payload[draw(st.sampled_from(["x", "b ", "V"]))] = 0
    text = json.dumps(
        payload,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (",\n", ":")])),
        allow_nan=True,
    )
    return text.replace("Infinity", draw(st.sampled_from(["Infinity", "1e999"])))


@settings(max_examples=200, deadline=None)
@given(bindings)
def test_an_honest_carrier_binds_what_was_bound(chosen: dict[str, Any]) -> None:
    """A carrier that inject made binds exactly the portable names bound, and their
    values with their types; the reference reads the same."""
    text = honest(chosen)
    expected = {
        xname: typed(values)
        for xname, values in (
            ("portable_app.trace", chosen["trace"]),
            (
                "portable_app.request",
                {k: v for k, v in chosen["request"].items() if k != "db"},
            ),
        )
        if values
    }
    assert {x: typed(v) for x, v in reference(text).items()} == expected
    with extract({CARRIER_KEY: text}):
        assert seen() == expected


@settings(max_examples=300, deadline=None)
@given(edited())
@example('{"b":{"portable_app.trace":{"a":"1e999"}},"v":1}')
@example('{"b":{"portable_app.trace":{"a":"1\u0663"}},"v":1}')
@example('{"b":{"portable_app.trace":{"a":"\\"\\\\u+041\\""}},"v":1}')
@example('{"b":{"portable_app.trace":{"a":"\\"\\u00e9\\""}},"v":1}')
def test_an_edited_carrier_binds_what_it_says_or_nothing(text: str) -> None:
    """Changed anywhere, a carrier binds what the format reads in it, or nothing."""
    check(text)


@settings(max_examples=300, deadline=None)
@given(forged())
def test_a_forged_carrier_binds_what_it_says_or_nothing(text: str) -> None:
    """Built from forged parts, a carrier binds what the format reads, or nothing."""
    check(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_text_binds_what_it_says_or_nothing(text: str) -> None:
    """Any text at all, as the carrier's value."""
    check(text)


@settings(max_examples=200, deadline=None)
@given(bindings, st.data())
def test_a_signed_carrier_changed_anywhere_is_refused(
    chosen: dict[str, Any], data: st.DataObject
) -> None:
    """With a key, any change to a signed carrier's text is refused, binding nothing."""
    key = b"the shared secret"
    with app.trace(**chosen["trace"]), app.request(**chosen["request"]):
        carrier = inject(key=key)
    text = carrier[CARRIER_KEY]
    at = data.draw(st.integers(0, len(text) - 1))
    piece = data.draw(st.text(EDIT_ALPHABET, min_size=1, max_size=2))
    changed = text[:at] + piece + text[at + 1 :]
    assume(changed != text)
    with pytest.raises(CarrierError, match="its signature is missing or does not"):
        extract({CARRIER_KEY: changed, SIGNATURE_KEY: carrier[SIGNATURE_KEY]}, key=key)
    assert seen() == {}


# -- Python's own JSON scanner, which PyPy reads carriers with -------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        # Refused by the number hooks where the scanner reads Unicode digits (up to
        # 3.13), or as what follows a number where it reads ASCII ones (3.14+).
        ("1\u0663", "is not a JSON number|Extra data"),
        ("[0.\u0663]", "is not a JSON number|Expecting"),
        ("1e\u0663", "is not a JSON number|Extra data"),
        ('"\\u+041"', "Invalid"),
        ('"\\u 41 "', "Invalid"),
        ('"\\u0_41"', "Invalid"),
        ('"\\u\u0660\u0660\u0664\u0661"', "Invalid"),
        ('["\\\\", "\\u004"]', "Invalid"),
    ],
)
def test_pythons_own_scanner_reads_as_strictly(text: str, why: str) -> None:
    """Python's own scanner takes any Unicode digit for a digit and, before 3.10's
    fixes (PyPy 3.9), any \\u escape that int(..., 16) takes; xlocal's readers made
    with it refuse what the C scanner refuses, and read the rest alike."""
    from xlocal.portable import _loaders  # noqa: PLC0415 - the readers' maker

    pure_value, pure_carrier = _loaders(getattr(json.scanner, "py_make_scanner"))  # noqa: B009 - not in typeshed
    for load in (pure_value, pure_carrier):
        with pytest.raises(ValueError, match=why):
            load(text)
    same = (
        '["\\\\u0041", "\\\\u+041", "\\u0041\\ud83d\\ude00", -0, 1.5e3, '
        '{"k": [true, null]}]'
    )
    assert pure_value(same) == pure_carrier(same) == json.loads(same)
