"""Carry portable bindings with OpenTelemetry's propagation: ``Propagator``, ``bound``.

Where a service already propagates trace context with OpenTelemetry, its instrumented
HTTP clients and servers call the global text-map propagator on every request.  Add
xlocal's to it, and the portable bindings travel in the same headers, signed::

    from opentelemetry.propagate import set_global_textmap
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import (
        TraceContextTextMapPropagator,
    )
    import xlocal.otel

    set_global_textmap(CompositePropagator([
        TraceContextTextMapPropagator(),
        xlocal.otel.Propagator(key=secret),
    ]))

Sending, ``inject`` writes the carrier of :func:`xlocal.portable.inject` (the headers
``xlocal`` and ``xlocal-signature``) for the bindings in force *where the request is
sent*: the current execution, whatever OpenTelemetry context it is given.  Receiving,
``extract`` checks and decodes the carrier at once and keeps the bindings in the
OpenTelemetry context it returns; ``with xlocal.otel.bound(context):`` binds them::

    context = opentelemetry.propagate.extract(headers)
    with xlocal.otel.bound(context):
        ...                                  # request.user_id as the sender bound it

A propagator must never raise on what it receives: a carrier that is invalid (forged,
changed, unsigned where a key is given, malformed, oversized, given twice) is logged as
one WARNING on the ``xlocal.otel`` logger, saying what is wrong (never the key), and
the context is returned unchanged, with nothing of that carrier in it.

OpenTelemetry is imported by this module: install ``xlocal[otel]``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from opentelemetry.context import create_key, get_value, set_value
from opentelemetry.context.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from .portable import (
    CARRIER_KEY,
    MAX_CARRIER_SIZE,
    SIGNATURE_KEY,
    CarrierError,
    Extracted,
    _decode_all,
    _keys,
    inject,
)

if TYPE_CHECKING:
    from .portable import Key, Unknown

__all__ = ["Propagator", "bound"]

logger = logging.getLogger(__name__)

#: Where ``Propagator.extract`` keeps the checked bindings in an OpenTelemetry context:
#: a key of xlocal's own, which nothing else can name.
_BINDINGS = create_key("xlocal-bindings")
_NOTHING = Extracted([])


class Propagator(TextMapPropagator):
    """OpenTelemetry text-map propagator of the portable bindings.

    Pass the secret *key* shared by senders and receivers (``bytes``), or a sequence
    of secrets while keys are rotated: the first signs, and a carrier signed with any
    of them is believed.  Without a key, pass ``trust_unsigned=True`` to say that
    whoever can send a request may choose the values it binds; one of the two is
    required, and not both.  *unknown* and *limit* are those of
    :func:`xlocal.portable.extract`.

    :meth:`inject` writes the fields ``xlocal`` and, when signed, ``xlocal-signature``
    through the *setter*; :meth:`extract` reads them through the *getter*, and keeps
    what it read for :func:`bound`.

    .. versionadded:: 1.0
    """

    __slots__ = ("_keys", "_limit", "_unknown")

    def __init__(
        self,
        *,
        key: Key | None = None,
        trust_unsigned: bool = False,
        unknown: Unknown = "ignore",
        limit: int = MAX_CARRIER_SIZE,
    ) -> None:
        if key is None and trust_unsigned is not True:
            raise TypeError(
                "Propagator() needs key= (the secret shared by senders and receivers) "
                "or trust_unsigned=True (whoever can send a request chooses the "
                "values it binds)"
            )
        if key is not None and trust_unsigned:
            raise TypeError(
                "Propagator() takes key= or trust_unsigned=True, not both: with a "
                "key, unsigned carriers are refused"
            )
        if unknown not in ("ignore", "error"):
            raise ValueError(f"unknown= must be 'ignore' or 'error', not {unknown!r}")
        if type(limit) is not int or limit <= 0:
            raise ValueError(f"limit= must be a positive int, not {limit!r}")
        self._keys = _keys(key)
        self._unknown: Unknown = unknown
        self._limit = limit

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Write the carrier of the portable bindings in force here into *carrier*.

        The bindings are those of the current execution (thread, greenlet or task),
        where the request is sent: xlocal keeps them in ``contextvars``, not in the
        OpenTelemetry context, so *context* is not read.  The carrier is signed with
        the first key.  A bound portable value that its codec cannot encode raises
        :class:`~xlocal.portable.UnportableError`, and a carrier over the limit
        :class:`~xlocal.portable.CarrierError`, in the caller that sends: the request
        is not sent without them.
        """
        written = inject(limit=self._limit, key=self._keys)
        setter.set(carrier, CARRIER_KEY, written[CARRIER_KEY])
        if self._keys is not None:
            setter.set(carrier, SIGNATURE_KEY, written[SIGNATURE_KEY])

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """Check the carrier in *carrier* and return *context* with its bindings.

        Everything is checked now, as :func:`xlocal.portable.extract` checks it (the
        signature too, when the propagator has a key); nothing is bound until a
        with-block of :func:`bound` enters the returned context's bindings.  Without
        *context*, the root context is extended, as OpenTelemetry's propagators do.

        A carrier without the ``xlocal`` field returns *context* unchanged.  An invalid
        one (a field given more than once included) is logged as one WARNING on the
        ``xlocal.otel`` logger and returns *context* unchanged: this never raises for
        what it receives.
        """
        if context is None:
            context = Context()
        try:
            found = _fields(carrier, getter)
            if found is None:
                return context
            bindings = _decode_all(found, self._unknown, self._limit, self._keys)
        except CarrierError as error:
            logger.warning("ignored an invalid xlocal carrier: %s", error)
            return context
        except Exception as error:  # a getter or a codec of the application's
            logger.warning(
                "ignored an xlocal carrier that could not be read: %s: %s",
                type(error).__name__,
                error,
            )
            return context
        return set_value(_BINDINGS, Extracted(bindings), context)

    @property
    def fields(self) -> set[str]:
        """The fields :meth:`inject` writes: ``{"xlocal", "xlocal-signature"}``."""
        return {CARRIER_KEY, SIGNATURE_KEY}

    def __repr__(self) -> str:
        if self._keys is None:
            how = "unsigned"
        else:
            count = len(self._keys)
            how = f"signed, {count} key{'s' if count > 1 else ''}"
        return f"<xlocal.otel.Propagator {how}>"


def _fields(carrier: CarrierT, getter: Getter[CarrierT]) -> Mapping[str, str] | None:
    """The carrier's fields as one mapping, or None when it has no ``xlocal`` field."""
    found: dict[str, str] = {}
    for name in (CARRIER_KEY, SIGNATURE_KEY):
        # A str too: a getter of the application's may give the value itself.
        values: Sequence[str] | str | None = getter.get(carrier, name)
        if not values:
            if name == CARRIER_KEY:
                return None
            continue
        if isinstance(values, str):
            values = [values]
        if len(values) != 1:
            raise CarrierError(
                f"cannot extract bindings from the carrier: its {name!r} field is "
                f"given {len(values)} times, and it is one value; nothing was bound"
            )
        found[name] = values[0]
    return found


def bound(context: Context | None = None) -> Extracted:
    """The bindings :meth:`Propagator.extract` kept in *context*, to bind with ``with``.

    *context* defaults to the current OpenTelemetry context.  ``with bound(context):``
    binds, for the block, the portable names of the carrier extracted into it; a
    context that holds none (nothing was extracted, or the carrier had no ``xlocal``
    field or was invalid) binds nothing.  Exiting restores what was bound before.

    .. versionadded:: 1.0
    """
    extracted = get_value(_BINDINGS, context)
    return extracted if isinstance(extracted, Extracted) else _NOTHING
