"""Portable bindings across HTTP: a service's bindings follow its requests to the next.

The sending side puts the carrier that :func:`xlocal.portable.inject` makes into each
outgoing request's headers, unchanged (``xlocal`` and, when signed,
``xlocal-signature``); the receiving side reads them back and binds what they carry for
the whole request, with a real with-block::

    # service A: every request this session sends carries A's portable bindings
    session = xlocal.http.install(requests.Session(), key=SECRET)

    # service B: each request runs with the bindings its caller carried
    app = xlocal.http.WSGIMiddleware(app, key=SECRET)

Who may set which name: with ``key=``, only a sender that holds the secret; with
``trust_unsigned=True``, anyone who can reach the service; with ``baggage=``, the
names it lists can be set by anyone, in a W3C ``baggage`` header, as services in other
languages write it.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from . import _baggage
from ._baggage import BaggageError
from ._binding import Binding
from ._core import xlocal
from ._middleware import StartResponse, WSGIApplication, WSGIEnvironment
from ._request import outside
from .asgi import ASGIApplication, Receive, Scope, Send
from .portable import (
    CARRIER_KEY,
    MAX_CARRIER_SIZE,
    SIGNATURE_KEY,
    CarrierError,
    Extracted,
    Key,
    Unknown,
    _decode_all,
    _fail,
    _keys,
    _put,
)
from .wsgi import serve

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "BAGGAGE_HEADER",
    "ASGIMiddleware",
    "BaggageError",
    "WSGIMiddleware",
    "aiohttp_trace_config",
    "headers",
    "install",
]

BaggageError.__module__ = __name__

#: The W3C header that ``baggage=`` reads and writes.
BAGGAGE_HEADER = "baggage"

#: What a refused request gets: no detail of why, and none of the secret.
_REFUSAL = b"invalid xlocal carrier\n"
_REFUSAL_HEADERS = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Length", str(len(_REFUSAL))),
]

logger = logging.getLogger(__name__)

_C = TypeVar("_C")
OnInvalid = Literal["reject", "ignore"]


# -- the receiving side ----------------------------------------------------------------


class _Receiver:
    """What both middlewares share: the options, checked, and reading a request."""

    __slots__ = ("_app", "_baggage", "_keys", "_limit", "_reject", "_unknown")

    def __init__(
        self,
        app: Any,
        *,
        key: Key | None,
        trust_unsigned: bool,
        on_invalid: OnInvalid,
        baggage: Mapping[str, xlocal] | None,
        unknown: Unknown,
        limit: int,
    ) -> None:
        kind = type(self).__name__
        if not callable(app):
            raise TypeError(f"{kind} wraps an application, not {app!r}")
        if key is None and trust_unsigned is not True:
            raise TypeError(
                f"{kind} needs key=, the secret that senders sign carriers with, or "
                f"trust_unsigned=True to let anyone who can reach this service set the "
                f"portable names (only behind a gateway that strips the xlocal headers)"
            )
        if key is not None and trust_unsigned:
            raise TypeError(
                f"{kind} takes key= or trust_unsigned=True, not both: with a key, "
                f"unsigned carriers are refused"
            )
        if on_invalid not in ("reject", "ignore"):
            raise ValueError(
                f"on_invalid= must be 'reject' (answer 400) or 'ignore' (run the "
                f"request with nothing bound from its headers), not {on_invalid!r}"
            )
        if unknown not in ("ignore", "error"):
            raise ValueError(f"unknown= must be 'ignore' or 'error', not {unknown!r}")
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit= must be a positive int, not {limit!r}")
        self._app = app
        self._keys = _keys(key)
        self._reject = on_invalid == "reject"
        self._baggage = None if baggage is None else _baggage.check_spec(baggage)
        self._unknown = unknown
        self._limit = limit

    def _bindings(
        self, carrier: dict[str, str], baggage: str | None
    ) -> list[Binding[Any]]:
        """Check the request's headers whole; make the bindings, baggage's first."""
        bindings: list[Binding[Any]] = []
        if self._baggage is not None and baggage is not None:
            try:
                members = _baggage.parse(baggage, self._baggage)
            except BaggageError as error:
                raise _fail(str(error)) from None
            by_xlocal: dict[xlocal, dict[str, str]] = {}
            for name, x in self._baggage.items():
                if name in members:
                    by_xlocal.setdefault(x, {})[name] = members[name]
            bindings.extend(x(**values) for x, values in by_xlocal.items())
        bindings.extend(_decode_all(carrier, self._unknown, self._limit, self._keys))
        return bindings

    def _refused(self, method: str, path: str, error: CarrierError) -> None:
        logger.warning("refused the xlocal carrier of %s %r: %s", method, path, error)

    def __repr__(self) -> str:
        trust = "signed" if self._keys else "unsigned"
        return f"<{type(self).__name__} {self._app!r} ({trust} carriers)>"


class WSGIMiddleware(_Receiver):
    """Bind, for each request to a WSGI app, the portable bindings its headers carry.

    ::

        app = WSGIMiddleware(app, key=SECRET)

    A request whose ``xlocal`` header holds a carrier signed with *key* runs with its
    portable bindings bound: while the app runs, while its response is iterated and
    while it is closed, in a ``contextvars.Context`` of the request's own, so nothing
    bound from a header outlives the request or reaches the server's thread.  A request
    without the header runs with nothing bound from it.

    A carrier that is forged, changed, unsigned (with a *key*), malformed or over
    *limit* binds nothing.  It is logged once, as a warning of the ``xlocal.http``
    logger, and the request gets ``400 Bad Request`` with no detail, or, with
    ``on_invalid="ignore"``, runs with nothing bound from its headers.

    :param app: the WSGI application.
    :param key: the secret that senders sign with, or a sequence of secrets while keys
        are rotated (a carrier signed with any of them is believed).
    :param trust_unsigned: believe unsigned carriers, from anyone who can reach the
        service; needed when there is no *key*, and refused beside one.
    :param on_invalid: ``"reject"`` (400) or ``"ignore"``.
    :param baggage: names to bind from the W3C ``baggage`` header, each with the xlocal
        that binds it, as ``{"tenant": request}``; they are not signed.  The carrier
        binds inside them, so it wins a name both give.
    :param unknown: ``"error"`` to refuse a carrier that names an xlocal or a name not
        portable here, rather than ignoring that part.
    :param limit: the largest carrier read, in bytes.

    When :class:`xlocal.wsgi.XlocalMiddleware` serves a portable xlocal too, put this
    middleware inside it: it starts each request from nothing on its xlocal.

    .. versionadded:: 1.0
    """

    __slots__ = ()

    def __init__(
        self,
        app: WSGIApplication,
        *,
        key: Key | None = None,
        trust_unsigned: bool = False,
        on_invalid: OnInvalid = "reject",
        baggage: Mapping[str, xlocal] | None = None,
        unknown: Unknown = "ignore",
        limit: int = MAX_CARRIER_SIZE,
    ) -> None:
        super().__init__(
            app,
            key=key,
            trust_unsigned=trust_unsigned,
            on_invalid=on_invalid,
            baggage=baggage,
            unknown=unknown,
            limit=limit,
        )

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        context = contextvars.copy_context()
        return context.run(self._start, context, environ, start_response)

    def _start(
        self,
        context: contextvars.Context,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        carrier = {}
        for header, environ_key in _WSGI_CARRIER:
            if environ_key in environ:
                carrier[header] = environ[environ_key]
        try:
            bindings = self._bindings(carrier, environ.get("HTTP_BAGGAGE"))
        except CarrierError as error:
            self._refused(
                environ.get("REQUEST_METHOD", "?"), environ.get("PATH_INFO", ""), error
            )
            if self._reject:
                start_response("400 Bad Request", list(_REFUSAL_HEADERS))
                return [_REFUSAL]
            bindings = []
        # Entered here and exited by finish(), for an owner that stands for the
        # request: the exit finds its entries by it, not among the running frames.
        extracted, request = Extracted(bindings), object()
        extracted._enter_as(request)

        def finish() -> None:
            extracted._exit_as(request)

        return serve(self._app, environ, start_response, context, finish)


_WSGI_CARRIER = [
    (CARRIER_KEY, "HTTP_" + CARRIER_KEY.upper().replace("-", "_")),
    (SIGNATURE_KEY, "HTTP_" + SIGNATURE_KEY.upper().replace("-", "_")),
]


class ASGIMiddleware(_Receiver):
    """Bind, for each request to an ASGI app, the portable bindings its headers carry.

    ::

        app = ASGIMiddleware(app, key=SECRET)

    The same as :class:`WSGIMiddleware`, for ``http`` and ``websocket`` requests: the
    bindings are a with-block around the app's handling of the request, streaming
    included, in the request's task; the server's ``send`` and ``receive`` run without
    them.  A refused websocket is closed before it is accepted (the client sees 403).
    A header the carrier needs given twice is refused.  ``lifespan`` passes through.

    .. versionadded:: 1.0
    """

    __slots__ = ()

    def __init__(
        self,
        app: ASGIApplication,
        *,
        key: Key | None = None,
        trust_unsigned: bool = False,
        on_invalid: OnInvalid = "reject",
        baggage: Mapping[str, xlocal] | None = None,
        unknown: Unknown = "ignore",
        limit: int = MAX_CARRIER_SIZE,
    ) -> None:
        super().__init__(
            app,
            key=key,
            trust_unsigned=trust_unsigned,
            on_invalid=on_invalid,
            baggage=baggage,
            unknown=unknown,
            limit=limit,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        try:
            bindings = self._bindings(*_asgi_headers(scope))
        except CarrierError as error:
            method = scope.get("method", "WEBSOCKET")
            self._refused(method, scope.get("path", ""), error)
            if self._reject:
                await _refuse(kind, receive, send)
                return
            bindings = []
        outer = contextvars.copy_context()
        with Extracted(bindings):
            await self._app(scope, outside(receive, outer), outside(send, outer))


def _asgi_headers(scope: Scope) -> tuple[dict[str, str], str | None]:
    """The carrier and the baggage header of an ASGI request."""
    carrier: dict[str, str] = {}
    baggage: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"baggage":
            baggage.append(value.decode("latin-1"))
        elif name in _ASGI_CARRIER:
            header = _ASGI_CARRIER[name]
            if header in carrier:
                raise _fail(f"the request has more than one {header!r} header")
            carrier[header] = value.decode("latin-1")
    return carrier, ",".join(baggage) if baggage else None


_ASGI_CARRIER = {name.encode(): name for name in (CARRIER_KEY, SIGNATURE_KEY)}


async def _refuse(kind: str, receive: Receive, send: Send) -> None:
    if kind == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (name.lower().encode(), value.encode())
                for name, value in _REFUSAL_HEADERS
            ],
        }
    )
    await send({"type": "http.response.body", "body": _REFUSAL})


# -- the sending side ------------------------------------------------------------------


class _Sender:
    """Writes the current execution's carrier (and baggage) into request headers."""

    __slots__ = ("_baggage", "_keys", "_limit", "hosts")

    def __init__(
        self,
        key: Key | None,
        baggage: Mapping[str, xlocal] | None,
        limit: int,
        hosts: Iterable[str] | None = None,
    ) -> None:
        self._keys = _keys(key)
        self._baggage = None if baggage is None else _baggage.check_spec(baggage)
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit= must be a positive int, not {limit!r}")
        self._limit = limit
        #: The hosts that get the headers, or None for every host.
        self.hosts = None if hosts is None else _check_hosts(hosts)

    def __call__(self, headers: MutableMapping[str, str]) -> None:
        _put(headers, self._keys, self._limit)
        if self._baggage is not None:
            members = _baggage.read(self._baggage)
            if members:
                headers[BAGGAGE_HEADER] = _baggage.merge(
                    headers.get(BAGGAGE_HEADER), members
                )

    def __deepcopy__(self, memo: Any) -> _Sender:
        return self  # options, never changed once made

    def __reduce__(self) -> Any:
        if self._baggage is not None:
            raise TypeError(
                "cannot pickle a client that xlocal.http was installed on with "
                "baggage=: it names xlocals, which are not pickled; install it again "
                "where it is unpickled"
            )
        return _Sender, (self._keys, None, self._limit, self.hosts)

    def to(self, headers: MutableMapping[str, str], host: str | None) -> None:
        """Write the headers of a request to *host* if it is one of ``hosts``; else
        take out those a request it was redirected from got (clients copy a
        request's headers to the next)."""
        assert self.hosts is not None
        if host is not None and host.lower().rstrip(".") in self.hosts:
            self(headers)
            return
        for name in (CARRIER_KEY, SIGNATURE_KEY):
            if name in headers:
                del headers[name]
        if self._baggage is not None and BAGGAGE_HEADER in headers:
            rest = _baggage.without(headers[BAGGAGE_HEADER], self._baggage)
            del headers[BAGGAGE_HEADER]
            if rest:
                headers[BAGGAGE_HEADER] = ",".join(rest)


def _check_hosts(hosts: object) -> frozenset[str]:
    """The ``hosts=`` option, checked: host names as a URL's host has them,
    lowercase, without a final dot or an IPv6 address's brackets."""
    if isinstance(hosts, (str, bytes)) or not isinstance(hosts, Iterable):
        raise TypeError(
            f"hosts= is a collection of host names, as hosts={{'orders.internal'}}, "
            f"not {hosts!r}"
        )
    names = set()
    for host in hosts:
        if type(host) is not str:
            raise TypeError(f"hosts= names each host with a str, not {host!r}")
        name = host.strip().lower().rstrip(".")
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        if not name.isascii():
            raise ValueError(
                f"hosts= takes a host name in its ASCII form, as a URL sends it "
                f"('xn--...'), not {host!r}"
            )
        if (
            not name
            or any(c in name for c in "/@?#[] \t")
            or (":" in name and name.count(":") < 2)  # a port; IPv6 has two or more
        ):
            raise ValueError(
                f"hosts= takes host names or IP addresses, as 'orders.internal', "
                f"'10.0.0.7' or '::1', without a scheme, port or path, not {host!r}"
            )
        names.add(name)
    if not names:
        raise ValueError(
            "hosts= is empty, so no request would carry the bindings; leave it out to "
            "send them to every host"
        )
    return frozenset(names)


def headers(
    *,
    key: Key | None = None,
    baggage: Mapping[str, xlocal] | None = None,
    limit: int = MAX_CARRIER_SIZE,
) -> dict[str, str]:
    """The headers that carry the current execution's portable bindings.

    For any client: ``urllib.request.Request(url, headers=xlocal.http.headers(key=K))``.
    They are what :func:`xlocal.portable.inject` returns, plus, with *baggage*, a W3C
    ``baggage`` header of the listed names that are bound (each bound to a str, else
    TypeError; over the W3C limits, :class:`BaggageError`).

    .. versionadded:: 1.0
    """
    made: dict[str, str] = {}
    _Sender(key, baggage, limit)(made)
    return made


def install(
    client: _C,
    *,
    key: Key | None = None,
    baggage: Mapping[str, xlocal] | None = None,
    limit: int = MAX_CARRIER_SIZE,
    hosts: Iterable[str] | None = None,
) -> _C:
    """Make every request *client* sends carry the bindings current where it is sent.

    ::

        session = xlocal.http.install(requests.Session(), key=SECRET)
        client = xlocal.http.install(httpx.AsyncClient(), key=SECRET)

    *client* is a ``requests.Session`` (each adapter mounted on it, now or later, is
    wrapped),
    an ``httpx.Client`` or an ``httpx.AsyncClient`` (a request event hook); it is
    returned.  Each request, redirects included, gets the headers :func:`headers`
    makes, signed with the first *key*.  Installing again replaces the options.  For
    aiohttp, see :func:`aiohttp_trace_config`.

    Without *hosts*, the headers go to every host the client sends to, a host that a
    redirect leads to included.  With ``hosts={"orders.internal", "10.0.0.7"}``, only
    requests to those hosts (by name, on any port) carry them; a request to any other,
    redirected or not, goes without them, and without the ``baggage`` members it
    would send (any others the request has stay).

    .. versionadded:: 1.0
    """
    sender = _Sender(key, baggage, limit, hosts)
    # A client of requests or httpx (or of a subclass) was made by an imported module:
    # neither is imported here.
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(client, requests.Session):
        _install_requests(client, sender)
        return client
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(client, (httpx.Client, httpx.AsyncClient)):
        _install_httpx(client, sender)
        return client
    raise TypeError(
        f"install() takes a requests.Session, an httpx.Client or an "
        f"httpx.AsyncClient, not {type(client).__module__}.{type(client).__qualname__}"
        f"; for aiohttp, pass trace_configs=[xlocal.http.aiohttp_trace_config()] to "
        f"its ClientSession, and for other clients send xlocal.http.headers()"
    )


def _install_requests(session: Any, sender: _Sender) -> None:
    """Wrap each adapter mounted on *session*, and those mounted on it later."""
    session.adapters = _CarryingAdapters(sender, session.adapters.items())


class _CarryingAdapters(collections.OrderedDict[str, Any]):
    """A requests Session's adapters (``Session.mount`` sets them here), each
    wrapped as it is set so that it carries for *sender*.  A copy or a pickle of the
    session keeps carrying."""

    def __init__(self, sender: _Sender, adapters: Iterable[tuple[str, Any]]) -> None:
        self.sender = sender
        for prefix, adapter in adapters:
            self[prefix] = adapter

    def __setitem__(self, prefix: str, adapter: Any) -> None:
        if isinstance(adapter, _CarryingAdapter):
            if adapter.sender is not self.sender:  # installed again: the new options
                adapter = _CarryingAdapter(adapter.inner, self.sender)
        else:
            adapter = _CarryingAdapter(adapter, self.sender)
        super().__setitem__(prefix, adapter)

    def __reduce__(self) -> Any:
        return type(self), (self.sender, list(self.items()))


class _CarryingAdapter:
    """A requests adapter that adds the carrier to each request, then sends it with
    the adapter it wraps, *inner*."""

    __slots__ = ("inner", "sender")

    def __init__(self, inner: Any, sender: _Sender) -> None:
        self.inner = inner
        self.sender = sender

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        sender = self.sender
        if sender.hosts is None:
            sender(request.headers)
        else:
            sender.to(request.headers, urlsplit(request.url).hostname)
        return self.inner.send(request, *args, **kwargs)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # max_retries, the pool's settings...: the wrapped adapter's own; not the
        # slots while they are unset, nor special methods (copy's __deepcopy__...).
        if name in _CarryingAdapter.__slots__ or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # adapter.max_retries = ...: set on the adapter that sends.
        if name in _CarryingAdapter.__slots__:
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)

    def __reduce__(self) -> Any:
        return _CarryingAdapter, (self.inner, self.sender)

    def __repr__(self) -> str:
        return f"<xlocal.http carrying {self.inner!r}>"


def _install_httpx(client: Any, sender: _Sender) -> None:
    import httpx  # noqa: PLC0415

    hook: Any
    if isinstance(client, httpx.AsyncClient):

        async def hook(request: httpx.Request) -> None:
            _to_httpx(sender, request)

    else:

        def hook(request: httpx.Request) -> None:
            _to_httpx(sender, request)

    hook.xlocal_sender = sender
    hooks = client.event_hooks
    hooks["request"] = [
        *(h for h in hooks["request"] if not hasattr(h, "xlocal_sender")),
        hook,
    ]
    client.event_hooks = hooks


def _to_httpx(sender: _Sender, request: Any) -> None:
    if sender.hosts is None:
        sender(request.headers)
    else:
        sender.to(request.headers, request.url.raw_host.decode("ascii"))


def aiohttp_trace_config(
    *,
    key: Key | None = None,
    baggage: Mapping[str, xlocal] | None = None,
    limit: int = MAX_CARRIER_SIZE,
    hosts: Iterable[str] | None = None,
) -> aiohttp.TraceConfig:
    """An aiohttp ``TraceConfig`` that makes each request carry the current bindings.

    ::

        session = aiohttp.ClientSession(
            trace_configs=[xlocal.http.aiohttp_trace_config(key=SECRET)]
        )

    Each request the session sends, redirects included, gets the headers
    :func:`headers` makes, in the task that sends it.  *hosts* limits them to the
    requests to those hosts, as for :func:`install`, with one difference: aiohttp
    tells a trace config of a redirect before it knows where it leads, so with *hosts*
    a redirected request goes without the headers, whatever its host.

    .. versionadded:: 1.0
    """
    import aiohttp  # noqa: PLC0415 - only who makes the config needs it

    sender = _Sender(key, baggage, limit, hosts)

    async def on_request_start(
        session: aiohttp.ClientSession,
        context: Any,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        if sender.hosts is None:
            sender(params.headers)
        else:
            sender.to(params.headers, params.url.raw_host)

    async def on_request_redirect(
        session: aiohttp.ClientSession,
        context: Any,
        params: aiohttp.TraceRequestRedirectParams,
    ) -> None:
        # The headers of the request to come, not yet knowing where it goes.
        sender.to(params.headers, None)

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_request_start)
    if sender.hosts is not None:
        config.on_request_redirect.append(on_request_redirect)
    return config
