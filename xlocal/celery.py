"""Carry portable bindings with Celery tasks: ``xlocal.celery.install(app)``.

After ``install(app)``, every task message the app publishes (``delay``,
``apply_async``, ``send_task``, retries, tasks published by tasks) carries the portable
bindings in force where it is published, encoded by :func:`xlocal.portable.inject`, in
one message header, :data:`HEADER`.

A signature carries the bindings in force where it was *made* instead: ``task.s()``,
``task.si()``, ``task.signature()``, ``task.subtask()``, ``app.signature(name)``, and
so every part of a chain, group or chord.  They are fixed in an option of the
signature's own, :data:`OPTION`, which Celery keeps however the signature is applied
(``apply_async``, ``delay``, ``apply``, after ``set``, ``clone``, ``replace(args=...)``,
``|``, in chains, groups and chords, and from its JSON form, as a worker sends a
chain's next link); ``headers=`` given along the way replace Celery's ``headers``
option, not the carrier, and are sent beside it.  A carrier given explicitly in
``headers=`` (``headers=inject()``) is sent as it is.  Each item of ``task.map()``,
``task.starmap()`` and ``task.chunks()`` runs with the carrier of the signature that
Celery's map task calls for it: the bindings in force where ``map``, ``starmap`` or
``chunks`` was called.  A signature without a carrier of its own carries the bindings
of whoever applies it, as ``send_task`` does: one made by Celery's module-level
``signature(name)`` or ``Signature(name)``, which no app makes, or one whose options
were replaced whole (``replace(options=...)``).

On the worker, the task body runs inside a real with-block of those bindings, entered
by the ``task_prerun`` signal and exited by ``task_postrun`` (which Celery sends also
when the task raises or retries).  Everything else of xlocal's own is hidden from the
task body, as :func:`xlocal.capture` would carry it: every other xlocal binding, and
the data of every :class:`xlocal.local.Local` and :class:`~xlocal.local.LocalStack`
(so every proxy to them).  The task sees exactly the carried portable bindings, and
what it binds or writes there is gone when it ends: a reused worker process keeps
nothing between tasks.

Publishing goes through the app's own message sender, wrapped by ``install``, so that a
value that cannot be encoded raises in the caller of ``delay`` (Celery's
``before_task_publish`` signal would only log it), and only installed apps carry.
``install`` also wraps the app's ``signature`` method, and the ``signature`` (alias
``subtask``) and ``apply`` methods of the app's task base class.

A worker that receives a malformed carrier logs an error on the ``xlocal.celery``
logger, naming the task and what is wrong, and runs the task with no xlocal bindings.

In eager mode (``task_always_eager``, ``task.apply()``) the task runs in the caller's
own thread and sees what a worker would: the caller's portable bindings (a signature's
own, for ``signature.apply()``), encoded and decoded, and nothing else of xlocal's,
neither the caller's other bindings nor its ``Local`` and ``LocalStack`` data.  The
caller's are back intact when the task returns, and what the task wrote stays in it.

Celery is imported only by :func:`install`.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._engines import hidden
from .portable import CARRIER_KEY, SIGNATURE_KEY, Key, _keys, extract, inject

if TYPE_CHECKING:
    from .portable import Unknown

__all__ = ["HEADER", "OPTION", "Installed", "install", "uninstall"]

#: The message header that holds the carrier's text (the carrier's own key: the message
#: headers are the carrier).
HEADER = CARRIER_KEY

#: The signature option that holds the carrier fixed when the signature was made: a
#: dict of the carrier's headers.  Celery keeps an option of its own through merges,
#: clones and JSON, and passes it to the app's message sender, which sends the carrier
#: as the message's :data:`HEADER`; whereas ``headers=`` given when a signature is
#: applied replace its whole ``headers`` option.
OPTION = "xlocal_carrier"

#: What of a carrier goes into the message headers.
_CARRIER_KEYS = (CARRIER_KEY, SIGNATURE_KEY)

#: Celery's built-in tasks that call the task of the signature they are given, once per
#: item, in their own body: each item runs with that signature's carrier.
_MAPPING_TASKS = frozenset({"celery.map", "celery.starmap", "celery.chunks"})

logger = logging.getLogger(__name__)

#: The handle of every installed app, by app.
_installed: weakref.WeakKeyDictionary[Any, Installed] = weakref.WeakKeyDictionary()
_lock = threading.Lock()

#: What each running task of this execution has to exit when it ends, innermost last:
#: eager tasks nest inside their caller's task.
_running: contextvars.ContextVar[tuple[tuple[str, contextlib.ExitStack], ...]] = (
    contextvars.ContextVar("xlocal.celery.running", default=())
)


class Installed:
    """The handle that :func:`install` returns: ``handle.uninstall()`` undoes it.

    .. versionadded:: 1.0
    """

    __slots__ = ("__weakref__", "_app", "_key", "_unknown")

    def __init__(
        self, app: Any, key: tuple[bytes, ...] | None, unknown: Unknown
    ) -> None:
        self._app = app
        self._key = key
        self._unknown = unknown

    @property
    def app(self) -> Any:
        """The Celery app this handle installed on."""
        return self._app

    @property
    def installed(self) -> bool:
        """Whether the app still carries bindings through this handle."""
        return _installed.get(self._app) is self

    def uninstall(self) -> None:
        """Stop carrying bindings with the app's tasks; doing it again does nothing."""
        with _lock:
            if _installed.get(self._app) is not self:
                return
            del _installed[self._app]
            # Back to Celery's own sender, which the class makes and caches, to the
            # app's own signature method, and to the methods the app's task base
            # class inherits.
            vars(self._app.amqp).pop("send_task_message", None)
            vars(self._app).pop("signature", None)
            for name in _TASK_METHODS:
                with contextlib.suppress(AttributeError):  # removed by someone else
                    delattr(self._app.Task, name)
            if not _installed:
                _disconnect()

    def __repr__(self) -> str:
        state = "installed" if self.installed else "uninstalled"
        return f"<xlocal.celery.Installed on {self._app!r}: {state}>"


def install(
    app: Any, *, key: Key | None = None, unknown: Unknown = "ignore"
) -> Installed:
    """Make *app*'s tasks carry the portable bindings of their publisher to the worker.

    Call it where the app is made, so that the publishing processes and the workers
    both run it.  Installing an app that is installed already returns the same
    handle (with other options, it is an error); each app of a process is installed
    (and uninstalled) on its own.

    With a secret *key* (bytes, the same in publishers and workers), carriers are
    signed (:func:`xlocal.portable.inject`'s ``key=``) and a worker refuses one that
    is unsigned or changed.  While keys are rotated, *key* is a sequence of secrets:
    the first signs, and a carrier signed with any of them is believed.  *unknown* is
    :func:`xlocal.portable.extract`'s: xlocal names the worker does not know are
    ignored, or make the carrier malformed.

    .. versionadded:: 1.0
    """
    from celery import Celery  # noqa: PLC0415 - Celery is needed only here

    if not isinstance(app, Celery):
        raise TypeError(
            f"xlocal.celery.install() needs a celery.Celery app, not "
            f"{type(app).__name__}: pass the app that defines the tasks"
        )
    keys = _keys(key)
    if unknown not in ("ignore", "error"):
        raise ValueError(f"unknown= must be 'ignore' or 'error', not {unknown!r}")
    with _lock:
        handle = _installed.get(app)
        if handle is not None:
            if (handle._key, handle._unknown) != (keys, unknown):
                raise ValueError(
                    f"xlocal.celery.install(): {app!r} is installed already, with "
                    f"other key= or unknown=: uninstall it first"
                )
            return handle
        amqp = app.amqp
        amqp.send_task_message = _carrying_sender(amqp.send_task_message, keys)
        app.signature = _capturing_app_signature(app.signature, keys)
        # The app's own task base class (Celery makes one per app): every task of the
        # app made with @app.task inherits from it, also those made before install.
        base = app.Task
        base.signature = base.subtask = _capturing_signature(base, keys)
        base.apply = _fixed_carrier_apply(base)
        handle = _installed[app] = Installed(app, keys, unknown)
        _connect()
        return handle


def uninstall(app: Any) -> None:
    """Undo :func:`install` on *app*; an app that is not installed is left as it is.

    .. versionadded:: 1.0
    """
    handle = _installed.get(app)
    if handle is not None:
        handle.uninstall()


# -- publishing ---------------------------------------------------------------------


def _carrying_sender(send: Any, key: tuple[bytes, ...] | None) -> Any:
    """Celery's ``send_task_message``, putting the carrier in each message's headers."""

    def send_task_message(
        producer: Any, name: str, message: Any, **options: Any
    ) -> Any:
        # message is (headers, properties, body, sent_event); the headers are a dict
        # that Celery sends as they are (protocol 2), updated with the headers= option.
        fixed = options.pop(OPTION, None)
        if CARRIER_KEY not in (options.get("headers") or {}):
            if fixed is None:
                # Raises here, in the caller of delay(), for an unencodable value.
                inject(message[0], key=key)
            else:
                message[0].update(_carrier_of(fixed))
        return send(producer, name, message, **options)

    send_task_message.__wrapped__ = send  # type: ignore[attr-defined]
    return send_task_message


def _carrier_of(fixed: Any) -> dict[str, Any]:
    """The message headers of a signature's :data:`OPTION`.

    Anything but a mapping is sent as the carrier's text, which the worker refuses as
    malformed: what was fixed in the signature is never replaced by anything else.
    """
    if isinstance(fixed, Mapping):
        return {k: fixed[k] for k in _CARRIER_KEYS if k in fixed}
    return {CARRIER_KEY: fixed}


def _fix(made: Any, key: tuple[bytes, ...] | None) -> Any:
    """Fix a carrier in the signature *made*, unless it has one.

    A carrier given in its ``headers`` is the one fixed; otherwise the bindings in force
    now (raising here for an unencodable value).
    """
    options = made.options
    if OPTION not in options:
        headers = options.get("headers") or {}
        if CARRIER_KEY in headers:
            options[OPTION] = _carrier_of(headers)
        else:
            options[OPTION] = inject(key=key)
    return made


def _capturing_signature(base: Any, key: tuple[bytes, ...] | None) -> Any:
    """``Task.signature`` (and its alias ``subtask``) for *base*, fixing the bindings
    of now in the signature's :data:`OPTION`.

    ``s()``, ``si()``, ``map()``, ``starmap()``, ``chunks()`` and retries make their
    signatures through it.
    """
    inherited = super(base, base).signature

    def signature(self: Any, args: Any = None, *rest: Any, **options: Any) -> Any:
        return _fix(inherited(self, args, *rest, **options), key)

    signature.__doc__ = inherited.__doc__
    return signature


def _capturing_app_signature(made_by: Any, key: tuple[bytes, ...] | None) -> Any:
    """The app's own ``signature`` method, fixing the bindings of now in a signature
    made from a task's name (or a task); one made from a dict (another signature, or
    its JSON form) keeps what that one carries."""

    def signature(*args: Any, **kwargs: Any) -> Any:
        varies = args[0] if args else kwargs.get("varies")
        made = made_by(*args, **kwargs)
        return made if isinstance(varies, dict) else _fix(made, key)

    signature.__doc__ = made_by.__doc__
    signature.__wrapped__ = made_by  # type: ignore[attr-defined]
    return signature


def _fixed_carrier_apply(base: Any) -> Any:
    """``Task.apply`` for *base*: a signature's :data:`OPTION` goes into the headers
    that the eager task sees, unless those headers hold a carrier given explicitly.

    ``signature.apply()``, and ``delay()`` with ``task_always_eager``, pass the
    signature's options to it; Celery would otherwise drop the option there.
    """
    inherited = super(base, base).apply
    parameters = inspect.signature(inherited)

    def apply(self: Any, *args: Any, **options: Any) -> Any:
        fixed = options.pop(OPTION, None)
        if fixed is None:
            return inherited(self, *args, **options)
        # headers= may come by name or in its place.
        bound = parameters.bind(self, *args, **options)
        headers = bound.arguments.get("headers") or {}
        if CARRIER_KEY not in headers:
            bound.arguments["headers"] = {**headers, **_carrier_of(fixed)}
        return inherited(*bound.args, **bound.kwargs)

    apply.__doc__ = inherited.__doc__
    return apply


#: The methods that install() sets on the app's task base class.
_TASK_METHODS = ("signature", "subtask", "apply")


# -- running ------------------------------------------------------------------------


def _connect() -> None:
    from celery import signals  # noqa: PLC0415

    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid=__name__)
    signals.task_postrun.connect(_postrun, weak=False, dispatch_uid=__name__)


def _disconnect() -> None:
    from celery import signals  # noqa: PLC0415

    signals.task_prerun.disconnect(_prerun, dispatch_uid=__name__)
    signals.task_postrun.disconnect(_postrun, dispatch_uid=__name__)


def _prerun(
    *, task: Any, task_id: str, args: Any = None, kwargs: Any = None, **_: Any
) -> None:
    """Enter the carried bindings around the task body (``task_prerun``)."""
    handle = _installed.get(task._get_app())
    if handle is None:
        return  # a task of an app that is not installed
    stack = contextlib.ExitStack()
    # Pushed before anything is entered, so that postrun finds it whatever happens.
    _running.set((*_running.get(), (task_id, stack)))
    problem: Exception | None = None
    try:
        headers = _carrying_headers(task, args, kwargs, handle._key)
        # Checks the whole carrier and binds nothing yet; no carrier binds nothing.
        extracted = extract(headers, key=handle._key, unknown=handle._unknown)
    except (ValueError, TypeError) as error:
        problem = error
    stack.enter_context(hidden())
    if problem is None:
        stack.enter_context(extracted)
    else:
        logger.error(
            "xlocal.celery: task %s[%s] runs with no xlocal bindings: %s",
            task.name,
            task_id,
            problem,
        )


def _carrying_headers(
    task: Any, args: Any, kwargs: Any, key: tuple[bytes, ...] | None
) -> Mapping[str, Any]:
    """The headers whose carrier the task runs with.

    A ``celery.map``, ``celery.starmap`` or ``celery.chunks`` task calls the task of the
    signature it is given (its first argument, ``task``) once per item: that
    signature's carrier, if it has one.  Else the message's; in eager mode, what a
    signature carries, or else what the caller would carry, as a worker sees it.
    """
    if task.name in _MAPPING_TASKS:
        with contextlib.suppress(LookupError, TypeError):  # not a signature with one
            mapped = kwargs["task"] if kwargs else args[0]
            return _carrier_of(mapped["options"][OPTION])
    request = task.request
    if not request.is_eager:
        message: Mapping[str, Any] = vars(request)  # the message's headers are in it
        return message
    headers: Mapping[str, Any] = request.headers or {}
    return headers if CARRIER_KEY in headers else inject(key=key)


def _postrun(*, task_id: str, **_: Any) -> None:
    """Exit what ``_prerun`` entered for the task (``task_postrun``)."""
    running = _running.get()
    ids = [entry[0] for entry in running]
    if task_id not in ids:
        return  # a task of an app that is not installed
    depth = len(ids) - 1 - ids[::-1].index(task_id)
    # Anything pushed after this task and never popped goes with it.
    _running.set(running[:depth])
    for _task_id, stack in reversed(running[depth:]):
        stack.close()
