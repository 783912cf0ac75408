"""W3C Baggage (https://www.w3.org/TR/baggage/): the members xlocal reads and writes.

A ``baggage`` header is a comma-separated list of ``key=value`` members, each value
percent-encoded UTF-8, each member optionally followed by ``;property`` parts.  Services
in any language read and write it, so chosen string-valued names can ride in it beside
xlocal's own carrier.  The limits are the W3C's and OpenTelemetry's, enforced both when
a header is made and when one is read.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote, unquote

from ._core import xlocal
from ._errors import _label

__all__ = ["MAX_BYTES", "MAX_MEMBERS", "MAX_MEMBER_BYTES", "BaggageError"]

#: The most members a baggage header may hold.
MAX_MEMBERS = 64
#: The most bytes one member (``key=value`` and its properties) may take.
MAX_MEMBER_BYTES = 4096
#: The most bytes a whole baggage header may take.
MAX_BYTES = 8192

#: A key is an HTTP token (RFC 9110); a value is made of baggage-octets: printable
#: ASCII but for whitespace, '"', ',', ';' and '\'.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = r"[!#-+\--:<-\[\]-~]*"
_OWS = r"[ \t]*"
_MEMBER = re.compile(
    rf"{_OWS}({_TOKEN}){_OWS}={_OWS}({_VALUE})"
    rf"((?:{_OWS};{_OWS}{_TOKEN}(?:{_OWS}={_OWS}{_VALUE})?)*){_OWS}"
)
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class BaggageError(ValueError):
    """A W3C baggage header that cannot be read, or a member that cannot be sent.

    .. versionadded:: 1.0
    """


def check_spec(spec: object) -> dict[str, xlocal]:
    """Check a ``baggage=`` option: each member's key, with the xlocal it binds on."""
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"baggage= maps each member's name to the xlocal that binds it, as in "
            f"baggage={{'tenant': request}}, not a {type(spec).__name__}"
        )
    checked: dict[str, xlocal] = {}
    for name, x in spec.items():
        if not isinstance(x, xlocal):
            raise TypeError(
                f"baggage= maps {name!r} to {type(x).__name__}, not to the xlocal "
                f"that binds it"
            )
        if not isinstance(name, str) or not name.isidentifier() or name[0] == "_":
            raise ValueError(
                f"baggage= names {name!r}: a member of baggage= is bound under its "
                f"own name, so it must be a name that can be bound (an identifier "
                f"that does not start with '_')"
            )
        try:
            x(**{name: ""})  # the core's checks: a keyword, a typed namespace's names
        except (TypeError, ValueError) as error:
            raise ValueError(f"baggage= names {name!r}: {error}") from None
        checked[name] = x
    return checked


def read(spec: Mapping[str, xlocal]) -> dict[str, str]:
    """The members to send: each name of *spec* that is bound, with its str value."""
    members: dict[str, str] = {}
    for name, x in spec.items():
        try:
            value: Any = getattr(x, name)
        except AttributeError:
            continue
        if type(value) is not str:
            raise TypeError(
                f"cannot send {name!r} of {_label(x)} as W3C baggage: it is bound to "
                f"a {type(value).__name__}, and baggage carries text; bind a str, or "
                f"leave {name!r} out of baggage= (portable names carry other types)"
            )
        members[name] = value
    return members


def without(header: str, names: Collection[str]) -> list[str]:
    """The members of *header* (a request's baggage) not named in *names*."""
    kept = []
    for member in header.split(","):
        key = member.split("=", 1)[0].split(";", 1)[0].strip()
        if member.strip() and key not in names:
            kept.append(member.strip())
    return kept


def merge(header: str | None, members: Mapping[str, str]) -> str:
    """*header* (a request's baggage, or None) with *members* added or replaced."""
    kept = without(header, members) if header else []
    for key, value in members.items():
        member = f"{key}={quote(value, safe='')}"
        if len(member) > MAX_MEMBER_BYTES:
            raise BaggageError(
                f"cannot send {key!r} as W3C baggage: its member is {len(member)} "
                f"bytes percent-encoded, over the limit of {MAX_MEMBER_BYTES}; carry "
                f"it as a portable name instead"
            )
        kept.append(member)
    if len(kept) > MAX_MEMBERS:
        raise BaggageError(
            f"cannot send W3C baggage of {len(kept)} members, over the limit of "
            f"{MAX_MEMBERS}"
        )
    text = ",".join(kept)
    if len(text) > MAX_BYTES:
        raise BaggageError(
            f"cannot send W3C baggage of {len(text)} bytes, over the limit of "
            f"{MAX_BYTES}; carry the larger values as portable names instead"
        )
    return text


def parse(header: str, names: Collection[str] | None = None) -> dict[str, str]:
    """The members of a received baggage header, their values percent-decoded.

    With *names*, only those members are read, and other members are skipped
    unchecked, as members meant for other services may be written by other tools;
    the limits hold for the whole header.  Empty list elements are skipped, as HTTP
    asks of every comma-separated list.
    """
    if len(header) > MAX_BYTES:
        raise BaggageError(
            f"the baggage header is {len(header)} bytes, over the limit of {MAX_BYTES}"
        )
    parts = [part for part in header.split(",") if part.strip(" \t")]
    if len(parts) > MAX_MEMBERS:
        raise BaggageError(
            f"the baggage header has {len(parts)} members, over the limit of "
            f"{MAX_MEMBERS}"
        )
    members: dict[str, str] = {}
    for index, part in enumerate(parts):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_MEMBER_BYTES:
            raise BaggageError(
                f"member {index} of the baggage header is over the limit of "
                f"{MAX_MEMBER_BYTES} bytes"
            )
        if names is not None:
            key = part.split("=", 1)[0].split(";", 1)[0].strip(" \t")
            if key not in names:
                continue
        match = _MEMBER.fullmatch(part)
        if match is None:
            raise BaggageError(
                f"member {index} of the baggage header is not key=value in W3C "
                f"baggage syntax"
            )
        key, value = match.group(1, 2)
        if key in members:
            raise BaggageError(f"the baggage header gives {key!r} twice")
        if _ESCAPE.search(value):
            raise BaggageError(
                f"the baggage member {key!r} has a '%' that starts no percent-escape"
            )
        try:
            members[key] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise BaggageError(
                f"the baggage member {key!r} is not percent-encoded UTF-8"
            ) from None
    return members
