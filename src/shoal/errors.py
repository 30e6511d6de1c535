"""Every error shoal raises, under one root.

    ShoalError
    ├── ConfigError (ValueError)       misconfiguration; the message names the fix
    ├── EncodeError (TypeError)        a value cannot be stored (``.key``)
    ├── DecodeError (ValueError)       stored bytes this codec cannot read (cause chained)
    ├── StoreUnavailable               the store cannot be reached (``.store``, cause chained)
    │   └── NotAStore                  what is at the URL is no session store (``.store``)
    ├── SessionStateError              misuse of a session object (closed, read-only)
    ├── ConflictError                  optimistic save lost a race (``.keys``)
    ├── LockTimeout                    serialized lock not had in time (``.waited``)
    └── LockLost                       the lease expired before the save (fenced)

Errors carry their context as attributes. A session id is never put in a
message: only its hash prefix (``.session_ref``), so logs cannot replay it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "ConflictError",
    "DecodeError",
    "EncodeError",
    "LockLost",
    "LockTimeout",
    "NotAStore",
    "SessionStateError",
    "ShoalError",
    "StoreUnavailable",
]


class ShoalError(Exception):
    """Root of every error raised by shoal."""


class ConfigError(ShoalError, ValueError):
    """A manager, store URL or middleware was configured wrongly."""


class DecodeError(ShoalError, ValueError):
    """Stored bytes the codec cannot turn back into a value: another codec's, or corrupted.

    Whatever the codec raised underneath (a JSON error, an unknown tag, a bad
    Decimal, ...) is chained as ``__cause__``; callers catch this one error.
    """


class EncodeError(ShoalError, TypeError):
    """A session value cannot be encoded; raised at ``set`` time.

    ``key`` names the session key whose value was refused; ``subject``, when
    given, replaces it in the message (``flash()`` names the caller's flash
    message, not the internal key it was going to).
    """

    def __init__(self, key: str, reason: str, *, subject: str | None = None) -> None:
        super().__init__(f"{subject or f'session key {key!r}'} cannot be stored: {reason}")
        self.key = key
        self.reason = reason


class StoreUnavailable(ShoalError):
    """The session store could not be reached or failed; the cause is chained.

    ``store`` is the masked store URL (no password). ``reported`` is True
    when the outage it belongs to was already logged (by the circuit breaker
    of the store, which logs an outage once, not per request), so a
    middleware need not log it again.
    """

    reported: bool = False

    def __init__(self, store: str, detail: str = "") -> None:
        msg = f"session store {store} is unavailable"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.store = store
        self.detail = detail


class NotAStore(StoreUnavailable):
    """What the URL names exists but is no session store, and may not be made one.

    Raised by a store opened with ``require_existing()`` (the ``shoal`` admin
    commands) instead of creating its table, file or directory. ``store`` is
    the masked URL; ``detail`` says what was found and how to go on.
    """

    def __init__(self, store: str, detail: str) -> None:
        super().__init__(store, detail)
        self.args = (f"{store} is not a session store: {detail}",)

    def __str__(self) -> str:
        return str(self.args[0])


class SessionStateError(ShoalError):
    """A session was used in a state that does not allow it (closed, read-only)."""


class ConflictError(ShoalError):
    """An optimistic save found keys it read or wrote changed by another request.

    ``keys`` are the conflicting keys; ``session_ref`` a short hash of the id.
    """

    def __init__(self, keys: Iterable[str], session_ref: str = "") -> None:
        self.keys = tuple(sorted(keys))
        self.session_ref = session_ref
        super().__init__(
            f"session {session_ref} changed concurrently: keys {list(self.keys)!r}"
        )


class LockTimeout(ShoalError):
    """A serialized open waited ``waited`` seconds without getting the lock."""

    def __init__(self, waited: float, session_ref: str = "") -> None:
        self.waited = waited
        self.session_ref = session_ref
        super().__init__(
            f"session {session_ref} stayed locked for {waited:.3f}s "
            "(raise lock_timeout, or shorten the requests that hold it)"
        )


class LockLost(ShoalError):
    """A serialized save was refused: this request's lease expired and was fenced.

    Nothing was written. Raise ``lock_lease`` above the longest request, or
    renew the lease in long requests (``session.renew_lock()``).
    """

    def __init__(self, session_ref: str = "") -> None:
        self.session_ref = session_ref
        super().__init__(
            f"session {session_ref}: lock lease expired before the save; nothing was written"
        )
