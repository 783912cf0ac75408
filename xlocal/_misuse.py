"""The exit paths beyond the fast one, and the errors for every misused exit.

``Binding.__exit__`` (pure or compiled) handles an entry that its own with-statement
made and that is innermost; everything else comes here: an exit from another frame
(``ExitStack``, ``__exit__`` called by hand), out of order in this execution (every
entry made after it is unwound with it, then RuntimeError), or of an entry that this
execution only inherited or never had (RuntimeError, nothing changed).
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Hashable
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from ._debug import _entered, _exited_at
from ._frames import _active, _reset

if TYPE_CHECKING:
    from ._frames import _Binding, _OpenEntry

_getframe = sys._getframe


def _exit_rest(
    binding: _Binding,
    owner: Hashable,
    mine: _OpenEntry | None,
) -> None:
    """Binding.__exit__ beyond its fast path; *mine* is the entry *owner* made."""
    if mine is None:
        _exit_unowned(binding)
        return
    record, token, older = mine
    if older is not None:
        binding._entries[owner] = older
    _exit_misplaced(binding, record, token)


def _exit_unowned(binding: _Binding) -> None:
    """Exit an entry of *binding* from a frame that did not make one.

    ``ExitStack``, ``__exit__`` called by hand or by a context manager's own
    ``__exit__`` end an entry made by another frame.  The entry they end is the
    innermost one of *binding* in this execution whose maker is done, as for an
    ExitStack; failing that, if the binding has such an entry in another execution,
    the exit was meant for that one, and is refused; failing that, the innermost entry
    here, whose maker is running and ends its entry through a helper.
    """
    names = binding._names
    mine = [record for record, _ in _active(binding._var.get()) if record[0] is names]
    running = _running_frames()
    fallback = None
    for record in mine:
        found = _open_entry(binding, record)
        if found is None:
            # Its own exit ran already: this execution only inherited it.
            _exit_elsewhere(binding, record, RuntimeError())
        if found[0] not in running:
            _exit_misplaced(binding, record, found[1], found[0])
            return
        if fallback is None:
            fallback = record, found
    # Every entry active here was made by a running frame, or it was exited above: an
    # entry whose maker is done was made in another execution, and the exit was meant
    # for it.  (A copy of the keys: other threads may enter the binding meanwhile.)
    if fallback is None or any(key not in running for key in list(binding._entries)):
        _not_active(binding)
    record, (key, token) = fallback
    _exit_misplaced(binding, record, token, key)


def _running_frames() -> set[FrameType]:
    """The frames running in this thread around the current call."""
    running: set[FrameType] = set()
    frame: FrameType | None = _getframe(2)
    while frame is not None:
        running.add(frame)
        frame = frame.f_back
    return running


def _open_entry(
    binding: _Binding, record: Any
) -> tuple[Hashable, contextvars.Token[Any]] | None:
    """The key and token of *binding*'s open entry *record*, if it has it."""
    for key, newest in list(binding._entries.items()):
        entry = newest
        while entry is not None:
            if entry[0] is record:
                return key, entry[1]
            entry = entry[2]
    return None


def _forget(binding: _Binding, record: Any, key: Hashable) -> None:
    """Take the open entry *record*, made by the frame *key*, out of *binding*."""
    entries = binding._entries
    chain: _OpenEntry = entries.pop(key)  # *key* made *record*: it is in the chain
    kept: list[_OpenEntry] = []
    while chain[0] is not record:
        kept.append(chain)
        chain = chain[2]
    older = chain[2]
    for item in reversed(kept):
        older = (item[0], item[1], older)
    if older is not None:
        entries[key] = older


def _reset_or_refuse(binding: _Binding, record: Any, token: Any) -> None:
    """Undo the entry *record* with its *token*, or report why reset refused it.

    The compiled core calls this when its own reset was refused, so that the report
    is the pure core's; a refused reset changes nothing, so this one is refused too.
    """
    try:
        _reset(binding._var, token)
    except (ValueError, RuntimeError) as error:
        _exit_elsewhere(binding, record, error)


def _exit_elsewhere(binding: _Binding, record: Any, refusal: Exception) -> NoReturn:
    """Report an exit of an entry this execution only inherited; reset refused it.

    ``reset`` raises RuntimeError if the entry's token was used, that is, the entry was
    exited already where it was made; ValueError if it is still open there.
    """
    if isinstance(refusal, RuntimeError):
        state = (
            "and exited there already; here it was only inherited, and it ends with "
            "this task or snapshot run"
        )
    else:
        state = "where it is still bound; exit it there"
    raise RuntimeError(
        f"cannot exit {_entered(binding._xlocal, record, binding._var.get())} here: "
        f"it was entered in "
        f"another asyncio task or contextvars.Context, {state}. Nothing was changed"
        f"{_exited_at(binding)}"
    ) from None


def _exit_misplaced(
    binding: _Binding,
    record: Any,
    token: contextvars.Token[Any],
    key: Hashable | None = None,
) -> None:
    """Exit the entry *record* of *binding*, which may not be the innermost one here.

    If it is active further out, it and every entry made after it are exited at once,
    as an exception unwinding them would, so that no stale binding is left in this
    execution; then RuntimeError reports the misuse.  If it is not active here, it was
    made in another execution (an abandoned generator or coroutine finalized here, an
    exit called in another thread): nothing is changed.  *key*, if given, is the frame
    that made the entry, to forget the entry by once it is exited.
    """
    x = binding._xlocal
    var = binding._var
    inner: list[str] = []
    for active, frame in _active(var.get()):
        if active is record:
            try:
                _reset(var, token)
            except (ValueError, RuntimeError) as error:
                _exit_elsewhere(binding, record, error)
            if key is not None:
                _forget(binding, record, key)
            if not inner:
                return
            raise RuntimeError(
                f"{_entered(x, record, frame)} exited out of order: {len(inner)} "
                f"binding(s) entered after it were still active, innermost {inner[0]}. "
                f"A generator suspended inside a with-block, or __enter__/__exit__ "
                f"called by hand, often causes this. All of them have been exited, "
                f"which restores the bindings from before {binding!r} was entered"
                f"{_exited_at(binding)}"
            )
        inner.append(_entered(x, active, frame))
    _not_active(binding)


def _not_active(binding: _Binding) -> NoReturn:
    where = getattr(binding, "_where", None)
    last = f" (last entered at {where})" if where else ""
    raise RuntimeError(
        f"cannot exit {binding!r}{last}: it is not active in this execution. It was "
        f"exited already, or entered in another thread, greenlet or task (exit it "
        f"there), as when a generator or coroutine abandoned there is finalized here. "
        f"Nothing was changed{_exited_at(binding)}"
    )
