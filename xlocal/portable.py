"""Carry chosen bindings across a process boundary: codecs, carriers, inject/extract.

In one process, bindings travel as ``contextvars`` snapshots (``xlocal.spawn``).
Another process, or another machine, gets only what was marked portable, encoded as
strings in a plain mapping, the *carrier*, as OpenTelemetry's propagators do::

    request = xlocal("myapp.request", portable={"user_id", "tenant"})

    with request(user_id=7, tenant="acme", db=conn):   # db never leaves the process
        headers = inject()              # {"xlocal": "..."}: strings only
        job = carry(work)               # picklable; runs work in these bindings

    with extract(headers):              # in a process that imported myapp
        ...                             # request.user_id == 7, request.tenant == "acme"

The carrier format (version 1) is one key, ``"xlocal"``, whose value is printable
ASCII JSON text::

    {"b": {"<xlocal name>": {"<name>": "<value as its codec encoded it>", ...}}, "v": 1}

with keys sorted, so that equal bindings give equal carriers.  It is at most
``MAX_CARRIER_SIZE`` characters unless a ``limit`` says otherwise.

A carrier is untrusted input: ``extract`` never unpickles, checks everything before it
binds anything, and raises :class:`CarrierError` (a ``ValueError``) for a carrier that
is malformed, oversized, tampered with or of another version.  It never imports a
module: an xlocal name this process does not know (its module is not imported here) is
ignored, or an error with ``unknown="error"``; so is a name that is not portable here.
A well-formed carrier is believed unless it is signed: with a secret shared by both
sides, ``inject(key=...)`` signs it and ``extract(key=...)`` refuses any change.
"""

from __future__ import annotations

import contextvars
import functools
import hmac
import json
import json.scanner
import math
import re
import sys
import threading
import weakref
from collections.abc import Hashable, Mapping, MutableMapping, Sequence
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Callable, Literal, TypeVar, Union, overload

from ._binding import Binding, enter_as, exit_as
from ._codec import Codec
from ._core import xlocal
from ._errors import _label
from ._frames import _ENTRY, _names, _object_getattribute, _var
from ._namespace import annotation_text, annotations_of
from ._registry import _portables
from ._steps import ASYNC_GENERATOR, COROUTINE, GENERATOR, kind

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    _P = ParamSpec("_P")


#: What ``unknown=`` of :func:`extract` and :func:`carry` takes.
Unknown = Literal["ignore", "error"]
#: What ``key=`` takes: a secret, or a sequence of secrets while keys are rotated (the
#: first signs, and a carrier signed with any of them is believed).
Key = Union[bytes, Sequence[bytes]]

__all__ = [
    "CARRIER_KEY",
    "FORMAT_VERSION",
    "JSON",
    "MAX_CARRIER_SIZE",
    "SIGNATURE_KEY",
    "Carried",
    "CarrierError",
    "Codec",
    "Extracted",
    "JSONCodec",
    "Key",
    "UnportableError",
    "carry",
    "extract",
    "inject",
]

# Defined beside the core, which reads codecs without importing this module; shown here.
Codec.__module__ = __name__

#: The one key of a carrier that xlocal writes and reads.
CARRIER_KEY = "xlocal"
#: The key of a signed carrier's signature: the hex HMAC-SHA256 of its value.
SIGNATURE_KEY = "xlocal-signature"
#: The version of the carrier format; a carrier of another version is refused.
FORMAT_VERSION = 1
#: The largest carrier value, in characters, that ``inject`` makes and ``extract``
#: reads unless given another ``limit``: a carrier is printable ASCII (``extract``
#: refuses any other character), so these are bytes too.  It fits the 8 KiB that
#: common HTTP servers accept for one header.
MAX_CARRIER_SIZE = 8000

_getframe = sys._getframe

_R = TypeVar("_R")
_M = TypeVar("_M", bound=MutableMapping[str, str])


class CarrierError(ValueError):
    """A carrier that cannot be read (or made): nothing was bound.

    .. versionadded:: 1.0
    """


class UnportableError(TypeError):
    """A portable value that its xlocal's codec cannot encode; raised by the sender.

    .. versionadded:: 1.0
    """


# -- codecs ----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_json(value: object) -> None:
    """Refuse what would not come back from JSON as an equal value of its type."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return
    if t is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ValueError(f"{value!r} is not a JSON number")
        return
    if t is list:
        for item in value:  # type: ignore[attr-defined]
            _check_json(item)
        return
    if t is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                key_type = type(key).__name__
                raise TypeError(f"a dict with {key_type} keys is not a JSON object")
            _check_json(item)
        return
    raise TypeError(f"{t.__name__} is not a JSON type")


# Made once: json.dumps and json.loads with options build a new coder at every call.
# Keys sorted at every depth: equal values give equal text, whatever order a dict's
# keys were inserted in (Dask's keys and signatures depend on it).
_dump_value = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=True
).encode
_dump_str: Callable[[str], str] = json.encoder.encode_basestring
#: A str as JSON text in printable ASCII (' ' to '~'): everything else escaped.
_dump_ascii: Callable[[str], str] = json.encoder.encode_basestring_ascii
_SCALARS = {True: "true", False: "false", None: "null"}


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent, refused unless finite (``1e999``
    would read as inf, which no sender can encode) and written in ASCII digits."""
    if not text.isascii():
        raise ValueError(f"{text} is not a JSON number")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _ascii_int(text: str) -> int:
    if not text.isascii():
        raise ValueError(f"{text} is not a JSON number")
    return int(text)


#: A ``\u`` escape without four hex digits after it (the backslashes of an even run
#: before it escape each other).
_lenient_escape = re.compile(r"(?<!\\)(?:\\\\)*\\u(?![0-9A-Fa-f]{4})").search


def _scanner(
    decoder: json.JSONDecoder, make_scanner: Callable[[Any], Any], lenient: bool
) -> Callable[[str], Any]:
    """A strict JSON reader: one value, no surrounding space, no NaN.

    Python's own scanner (PyPy's; CPython's is in C) is *lenient*: it reads any
    Unicode digit as a digit, which the decoder's number hooks refuse, and in older
    versions any ``\\u`` escape that ``int(..., 16)`` takes, such as ``\\u+041``,
    which is checked here first.
    """
    scan = make_scanner(decoder)

    def load(text: str) -> Any:
        if lenient:
            bad = _lenient_escape(text)
            if bad is not None:
                raise ValueError(f"Invalid \\uXXXX escape at character {bad.end() - 2}")
        try:
            value, end = scan(text, 0)
        except StopIteration:
            raise ValueError("Expecting a JSON value at the start") from None
        if end != len(text):
            raise ValueError(f"Extra data after the value, at character {end}")
        return value

    return load


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return result


def _loaders(
    make_scanner: Callable[[Any], Any],
) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
    """The readers of a value's JSON text and of a carrier's, made with
    *make_scanner* (the tests make them with Python's own scanner on CPython too)."""
    lenient = make_scanner is not getattr(json.scanner, "c_make_scanner", None)
    hooks: dict[str, Any] = {
        "parse_float": _finite,
        "parse_constant": _reject_constant,
    }
    if lenient:  # the C scanner reads ASCII digits only, and passes ints fastest
        hooks["parse_int"] = _ascii_int
    carrier = json.JSONDecoder(object_pairs_hook=_unique_keys, **hooks)
    return (
        _scanner(json.JSONDecoder(**hooks), make_scanner, lenient),
        _scanner(carrier, make_scanner, lenient),
    )


_load_value, _load_carrier = _loaders(json.scanner.make_scanner)
#: A character outside the carrier's alphabet, printable ASCII (" " to "~").
_outside_alphabet = re.compile(r"[^ -~]").search


class JSONCodec:
    """The default codec: JSON types, exactly.

    ``str``, ``int``, ``float`` (finite), ``bool``, ``None``, and lists and dicts with
    ``str`` keys of those.  Anything else, subclasses and tuples included, is refused
    rather than changed on the way.  A dict's keys are sorted at every depth, so equal
    values give equal text.

    .. versionadded:: 1.0
    """

    __slots__ = ()

    def encode(self, value: Any) -> str:
        t = type(value)
        if t is str:
            return _dump_str(value)
        if t is int:
            return int.__repr__(value)
        if t is bool or value is None:
            return _SCALARS[value]
        _check_json(value)
        return _dump_value(value)

    def decode(self, text: str) -> Any:
        return _load_value(text)

    def __repr__(self) -> str:
        return "<xlocal.portable.JSON>"


#: The codec of a portable xlocal made without ``codec=``.
JSON = JSONCodec()


def _codec(x: xlocal, name: str) -> Codec:
    """The codec for *name* on *x*: the one place that chooses it.

    A typed namespace may choose it in the declared type, as
    ``user: Annotated[User, UserCodec()]``; then the xlocal's ``codec=``; then JSON.
    """
    declared = _declared_codecs(type(x)).get(name)
    if declared is not None:
        return declared
    codec: Codec | None = _object_getattribute(x, "_codec")
    return JSON if codec is None else codec


#: What a class that declares no names declares codecs for: nothing.
_NO_CODECS: Mapping[str, Codec] = MappingProxyType({})
#: The codecs that typed namespaces declare, by class, read at the first use.
_declared: weakref.WeakKeyDictionary[type, dict[str, Codec]] = (
    weakref.WeakKeyDictionary()
)
_declared_lock = threading.Lock()


def _evaluated(klass: type, annotation: Any) -> Any:
    """*annotation*, made by *klass*, evaluated where the class was defined."""
    text = annotation_text(annotation)
    if text is None:
        return annotation
    module = sys.modules.get(klass.__module__)
    try:
        return eval(text, vars(module) if module else {}, dict(vars(klass)))
    except Exception as error:
        raise UnportableError(
            f"cannot read the declared type {text!r} of {klass.__name__} to find "
            f"the codec it chooses: {type(error).__name__}: {error}; make the names it "
            f"uses importable where the class is defined"
        ) from error


def _declared_codecs(cls: type) -> Mapping[str, Codec]:
    """The codecs *cls*'s declared types choose with ``Annotated``, by name."""
    if cls._namespace.declared is None:  # type: ignore[attr-defined]
        return _NO_CODECS  # an open namespace declares no type
    # One thread reads a class: evaluating a declared type may make its codec, and
    # every carrier must use the same one.
    with _declared_lock:
        codecs = _declared.get(cls)
        if codecs is None:
            codecs = _declared[cls] = _read_codecs(cls)
    return codecs


def _read_codecs(cls: type) -> dict[str, Codec]:
    codecs: dict[str, Codec] = {}
    names = cls._namespace.declared  # type: ignore[attr-defined]
    for klass in reversed(cls.__mro__):
        for name, annotation in annotations_of(klass).items():
            if names and name in names and "Annotated" in str(annotation):
                for extra in getattr(_evaluated(klass, annotation), "__metadata__", ()):
                    if callable(getattr(extra, "encode", None)) and callable(
                        getattr(extra, "decode", None)
                    ):
                        codecs[name] = extra
    return codecs


def _portable(x: xlocal) -> frozenset[str] | bool:
    """The names of *x* that carriers take: its ``portable=`` names, and for
    ``portable=True`` every name, or a typed namespace's declared names."""
    names: frozenset[str] | bool = _object_getattribute(x, "_portable")
    if names is True:
        declared = type(x)._namespace.declared
        if declared is not None:
            return declared
    return names


# -- the sending side ------------------------------------------------------------------


def _encode_all(limit: int) -> str:
    """The carrier value for the portable bindings of the current execution.

    Written out as ``json.dumps`` would write it with ``sort_keys=True`` and no spaces:
    every string in printable ASCII, the rest escaped.
    """
    groups: list[str] = []
    sizes: list[tuple[int, str]] = []  # each value's length, for the error below
    # A copy, made without allocating per entry: a collection that runs meanwhile may
    # drop a collected xlocal from the registry.
    for xname, ref in sorted(_portables.copy().items()):
        x = ref()
        if x is None:  # collected since the copy was made (an encoding may collect)
            continue
        frame = _var(x).get()
        if frame[_ENTRY] is None:  # nothing bound (a typed namespace's defaults only)
            continue
        names = _portable(x)
        members: list[str] = []
        for name, value in sorted(_names(frame).items()):
            if names is True or name in names:  # type: ignore[operator]
                codec = _codec(x, name)
                try:
                    text = codec.encode(value)
                    if type(text) is not str:
                        raise TypeError(  # noqa: TRY301 - reported as the others are
                            f"the codec gave {type(text).__name__}, not str"
                        )
                except Exception as error:
                    raise UnportableError(
                        f"cannot carry {name!r} of {_label(x)}: its value, of type "
                        f"{type(value).__qualname__}, cannot be encoded by "
                        f"{codec!r} ({error}); bind a value the codec takes, give "
                        f"the xlocal a codec= for this type, or leave {name!r} out "
                        f"of portable="
                    ) from error
                text = _dump_ascii(text)
                members.append(f"{_dump_ascii(name)}:{text}")
                sizes.append((len(text), f"{xname}.{name}"))
        if members:
            groups.append(f"{_dump_ascii(xname)}:{{{','.join(members)}}}")
    text = f'{{"b":{{{",".join(groups)}}},"v":{FORMAT_VERSION}}}'
    if len(text) > limit:
        if not sizes:
            raise CarrierError(
                f"cannot make a carrier of {len(text)} characters, over the limit of "
                f"{limit}, even with nothing bound: raise limit="
            )
        largest, label = max(sizes)
        raise CarrierError(
            f"cannot make a carrier of {len(text)} characters, over the limit of "
            f"{limit}: the largest value is {label} ({largest} characters); "
            f"carry an id to look the data up with instead, or raise limit="
        )
    return text


def _sign(text: str, key: bytes) -> str:
    return hmac.digest(key, text.encode("utf-8", "surrogatepass"), "sha256").hex()


def _check_key(key: object) -> None:
    if type(key) is not bytes or not key:
        raise TypeError(
            f"key= must be a secret of non-empty bytes, shared by the sender and the "
            f"receiver, not {type(key).__name__}"
        )


def _keys(key: object) -> tuple[bytes, ...] | None:
    """The secrets a ``key=`` gives, the signing one first; None for no key."""
    if key is None:
        return None
    if isinstance(key, Sequence) and not isinstance(key, (str, bytes, bytearray)):
        keys = tuple(key)
        if not keys:
            raise TypeError(
                "key= is an empty sequence: give the secret that signs first, then "
                "the older secrets still believed while keys are rotated"
            )
        for each in keys:
            if type(each) is not bytes or not each:
                raise TypeError(
                    f"every secret in key= must be non-empty bytes, not "
                    f"{'empty bytes' if each == b'' else type(each).__name__}"
                )
        return keys
    _check_key(key)
    return (key,)  # type: ignore[return-value]


@overload
def inject(
    carrier: None = None, *, limit: int = MAX_CARRIER_SIZE, key: Key | None = None
) -> dict[str, str]: ...


@overload
def inject(
    carrier: _M, *, limit: int = MAX_CARRIER_SIZE, key: Key | None = None
) -> _M: ...


def inject(
    carrier: MutableMapping[str, str] | None = None,
    *,
    limit: int = MAX_CARRIER_SIZE,
    key: Key | None = None,
) -> MutableMapping[str, str]:
    """Put the portable bindings of the current execution into a carrier.

    Returns a new ``dict[str, str]``, or fills and returns *carrier*, any mutable
    mapping of strings (HTTP headers, message headers, ``os.environ``).  Only names
    marked portable are encoded, each by its xlocal's codec; a value the codec cannot
    encode raises :class:`UnportableError` here, naming the xlocal, the name and the
    type.  The carrier gets its key even when nothing portable is bound, so that an
    earlier carrier's bindings are never passed on by mistake.

    With a secret *key*, the carrier is signed too (HMAC-SHA256, under
    ``SIGNATURE_KEY``), so that ``extract(carrier, key=...)`` refuses it if anything
    in it was changed.  While keys are rotated, *key* is a sequence of secrets: the
    first signs.

    .. versionadded:: 1.0
    """
    keys = _keys(key)
    if carrier is None:
        carrier = {}
    elif not isinstance(carrier, MutableMapping):
        raise TypeError(
            f"inject() fills a mutable mapping of strings, not "
            f"{type(carrier).__name__}; call inject() to get a new dict"
        )
    _put(carrier, keys, limit)
    return carrier


def _put(
    carrier: MutableMapping[str, str], keys: tuple[bytes, ...] | None, limit: int
) -> None:
    """inject() with its arguments checked: for senders that checked them once."""
    text = _encode_all(limit)
    carrier[CARRIER_KEY] = text
    if keys is not None:
        carrier[SIGNATURE_KEY] = _sign(text, keys[0])
    elif SIGNATURE_KEY in carrier:
        del carrier[SIGNATURE_KEY]


# -- the receiving side ----------------------------------------------------------------


def _fail(why: str) -> CarrierError:
    return CarrierError(
        f"cannot extract bindings from the carrier: {why}; nothing was bound"
    )


def _payload(
    carrier: object, limit: int, keys: tuple[bytes, ...] | None
) -> dict[str, Any]:
    """The checked bindings field of a carrier: xlocal name -> its bindings."""
    if not isinstance(carrier, Mapping):
        raise _fail(f"it is of type {type(carrier).__name__}, not a mapping of str")
    if CARRIER_KEY not in carrier:
        return {}
    text = carrier[CARRIER_KEY]
    if type(text) is not str:
        raise _fail(
            f"its {CARRIER_KEY!r} value is of type {type(text).__name__}, not str"
        )
    if len(text) > limit:
        raise _fail(f"it is {len(text)} characters long, over the limit of {limit}")
    if keys is not None:
        signature = carrier.get(SIGNATURE_KEY)
        if type(signature) is not str or not any(
            hmac.compare_digest(
                signature.encode("utf-8", "surrogatepass"), _sign(text, key).encode()
            )
            for key in keys
        ):
            raise _fail(
                "its signature is missing or does not match: it was changed, or "
                "signed with another key"
            )
    # Printable ASCII only, as inject writes it: so a character is a byte, and the
    # limit bounds the bytes read too.
    outside = _outside_alphabet(text)
    if outside is not None:
        raise _fail(
            f"it holds {outside.group()!a} at character {outside.start()}, and a "
            f"carrier is printable ASCII (' ' to '~'; JSON escapes anything else)"
        )
    try:
        payload = _load_carrier(text)
    except (ValueError, RecursionError) as error:
        raise _fail(f"it is not valid JSON ({_reason(error)})") from None
    if type(payload) is not dict:
        raise _fail("it holds no JSON object")
    version = payload.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        raise _fail(
            f"its format version is {version!r}, and this xlocal reads version "
            f"{FORMAT_VERSION}: make it with the same xlocal version"
        )
    if set(payload) != {"b", "v"}:
        raise _fail(f"it has the fields {sorted(payload)}, not ['b', 'v']")
    groups = payload["b"]
    if type(groups) is not dict:
        raise _fail("its 'b' field is not an object")
    return groups


def _decode_group(x: xlocal, values: dict[str, Any], unknown: str) -> dict[str, Any]:
    """The decoded values of one xlocal's part of a carrier."""
    portable = _portable(x)
    decoded: dict[str, Any] = {}
    for name, encoded in values.items():
        if type(encoded) is not str:
            raise _fail(
                f"the value of {name!r} on {_label(x)} is of type "
                f"{type(encoded).__name__}, not an encoded str"
            )
        if not name.isidentifier() or name[:1] == "_":
            raise _fail(f"{name!r} cannot be bound on {_label(x)}")
        if portable is not True and name not in portable:  # type: ignore[operator]
            if unknown == "error":
                raise _fail(f"{name!r} is not portable on {_label(x)}")
            continue
        try:
            decoded[name] = _codec(x, name).decode(encoded)
        except Exception as error:
            raise _fail(
                f"the value of {name!r} on {_label(x)} cannot be decoded "
                f"({_reason(error)})"
            ) from None
    return decoded


def _reason(error: Exception) -> str:
    """Why decoding failed, in words that do not change with the Python version:
    running out of stack is "maximum recursion depth exceeded" up to 3.13, "Stack
    overflow (used ... kB)" from 3.14."""
    if isinstance(error, RecursionError):
        return "it is nested too deeply to decode"
    return str(error)


def _decode_all(
    carrier: object, unknown: str, limit: int, key: Key | None = None
) -> list[Binding[Any]]:
    """Check the carrier whole and make the bindings it holds; bind nothing yet."""
    if unknown not in ("ignore", "error"):
        raise ValueError(f"unknown= must be 'ignore' or 'error', not {unknown!r}")
    bindings: list[Binding[Any]] = []
    for xname, values in _payload(carrier, limit, _keys(key)).items():
        if type(values) is not dict or not values:
            raise _fail(f"the bindings of {xname!r} are not a non-empty object")
        ref = _portables.get(xname)
        x = None if ref is None else ref()
        if x is None:
            if unknown == "error":
                raise _fail(
                    f"it binds names on an xlocal named {xname!r}, which is not a "
                    f"portable xlocal in this process: import the module that "
                    f"defines it before extracting"
                )
            continue
        decoded = _decode_group(x, values, unknown)
        if decoded:
            try:
                bindings.append(x(**decoded))
            except (TypeError, ValueError) as error:
                # The core's refusals of names the checks above let through, such
                # as a Python keyword.
                raise _fail(str(error)) from None
    return bindings


class Extracted:
    """The bindings read from a carrier, to bind with a with-statement.

    Made by :func:`extract`.  Entering binds them, on top of what the execution has
    bound; exiting restores what was there.  It may be entered again, and by several
    executions at once, as a :class:`~xlocal.Binding` may.

    .. versionadded:: 1.0
    """

    __slots__ = ("_bindings",)

    def __init__(self, bindings: list[Binding[Any]]) -> None:
        self._bindings = tuple(bindings)

    def __enter__(self) -> None:
        self._enter_as(_getframe(1))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit_as(_getframe(1))

    async def __aenter__(self) -> None:
        # The frame that awaits this one runs the async with-statement.
        self._enter_as(_getframe(1))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit_as(_getframe(1))

    def _enter_as(self, owner: Hashable) -> None:
        """Enter the bindings on behalf of *owner*, the frame of the with-statement
        (or what stands for it), so that ``_exit_as`` with the same owner finds
        them by it."""
        entered: list[Binding[Any]] = []
        try:
            for binding in self._bindings:
                enter_as(binding, owner)
                entered.append(binding)
        except BaseException:  # entering fails only on signals
            for binding in reversed(entered):
                exit_as(binding, owner)
            raise

    def _exit_as(self, owner: Hashable) -> None:
        failure: BaseException | None = None
        for binding in reversed(self._bindings):
            try:
                exit_as(binding, owner)
            except BaseException as error:
                if failure is None:
                    failure = error
        if failure is not None:
            raise failure

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{_object_getattribute(b._xlocal, '_name')}({', '.join(sorted(b._names))})"
            for b in self._bindings
        )
        return f"<Extracted {inner or '(nothing)'}>"


def extract(
    carrier: Mapping[str, str],
    *,
    unknown: Unknown = "ignore",
    limit: int = MAX_CARRIER_SIZE,
    key: Key | None = None,
) -> Extracted:
    """Read the bindings in a carrier made by :func:`inject`, to bind with ``with``.

    ``with extract(headers):`` binds, for the block, the portable names the carrier
    holds on the xlocals this process knows.  The carrier is checked whole before
    anything is bound; a carrier that is not a mapping, not valid (strict JSON in
    printable ASCII, every number finite), too large (over *limit* characters) or of
    another format version raises :class:`CarrierError`.
    A mapping without the carrier key binds nothing.

    Nothing is ever unpickled or imported.  An xlocal name that is not a portable
    xlocal in this process, and a name that is not portable on its xlocal here, are
    ignored, or raise :class:`CarrierError` with ``unknown="error"``.

    Without a *key*, a well-formed carrier is believed: anyone who can write it can
    choose the values it binds.  With the secret *key* the sender signed it with
    (``inject(key=...)``), a carrier that is unsigned, or changed in any way, raises
    :class:`CarrierError`.  While keys are rotated, *key* is a sequence of secrets,
    and a carrier signed with any of them is believed.

    .. versionadded:: 1.0
    """
    return Extracted(_decode_all(carrier, unknown, limit, key))


# -- carrying a callable ---------------------------------------------------------------


def _run_carried(
    carried: Carried, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    with Extracted(_decode_all(carried._carrier, carried._unknown, carried._limit)):
        return carried._func(*args, **kwargs)


_KINDS = {
    COROUTINE: "coroutine",
    GENERATOR: "generator",
    ASYNC_GENERATOR: "async generator",
}


class Carried:
    """A callable that runs a function in the portable bindings captured with it.

    Made by :func:`carry`.  It pickles as the function and the carrier (strings
    only), so it may be sent to any process that can unpickle the function.  Every
    call runs in a fresh, empty ``contextvars.Context`` with the carrier's bindings
    entered by a with-block around the call: it sees nothing else that the calling
    thread had bound (a forked process inherits its parent's bindings; a call never
    sees them), and keeps nothing after it.

    .. versionadded:: 1.0
    """

    def __init__(
        self,
        func: Callable[..., Any],
        carrier: dict[str, str],
        unknown: str,
        limit: int,
    ) -> None:
        functools.update_wrapper(self, func)
        self._func = func
        self._carrier = carrier
        self._unknown = unknown
        self._limit = limit

    @property
    def carrier(self) -> Mapping[str, str]:
        """The carrier, read-only."""
        return MappingProxyType(self._carrier)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return contextvars.Context().run(_run_carried, self, args, kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return Carried, (self._func, self._carrier, self._unknown, self._limit)

    def __repr__(self) -> str:
        return f"<Carried {self._func!r}>"


def carry(
    func: Callable[_P, _R],
    *,
    unknown: Unknown = "ignore",
    limit: int = MAX_CARRIER_SIZE,
) -> Callable[_P, _R]:
    """Return *func* made to run with the portable bindings in force now, anywhere.

    The result is picklable when *func* is: hand it to ``multiprocessing``
    (``Pool.apply_async``, ``Pool.map``, ``Process(target=...)``) or anything else that
    pickles a callable.  Each call runs ``func(*args, **kwargs)`` in a fresh context
    inside a with-block that binds the captured portable names (see :class:`Carried`).
    The bindings are encoded now, so an unencodable value raises
    :class:`UnportableError` here.  The name, docstring and ``__wrapped__`` of *func*
    are kept.  *unknown* and *limit* are passed to :func:`extract` at each call.

    .. versionadded:: 1.0
    """
    if not callable(func):
        raise TypeError(f"carry() takes a callable, not {type(func).__name__}")
    made = _KINDS.get(kind(func))
    if made:
        raise TypeError(
            f"carry() takes a plain function, and {func!r} is a {made} function: the "
            f"bindings would end before its body runs; carry a plain function that "
            f"runs it (asyncio.run(...), list(...))"
        )
    if unknown not in ("ignore", "error"):
        raise ValueError(f"unknown= must be 'ignore' or 'error', not {unknown!r}")
    return Carried(func, inject(limit=limit), unknown, limit)
