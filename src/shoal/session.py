"""The session a request sees: a mapping that records what the request did.

It tracks, per key, what was read, written and deleted: the merge and
optimistic policies save exactly that, so concurrent requests that touch
different keys never lose each other's writes. Values are encoded at ``set``
time, so a value that cannot be stored fails there, naming its key, instead
of at the end of the request. A value read and then mutated in place
(``session["cart"].append(x)``) is detected at commit by re-encoding it.

The session holds no I/O: the manager gives it a loader, called on first use,
which is what makes the middleware lazy.

After its commit the session stays readable until the request ends, as a
read-only snapshot of what was saved (a session first touched then is loaded
read-only: no lock, no touch); only writes are refused, with a
``SessionStateError`` that says where the commit happened. After a rollback
it reads as it was loaded: the request's changes were dropped.

Keys starting with ``_shoal.`` hold shoal's own values (flashes, once-only
tokens, the replica's generation, the session's own lifetime). They are not part of the mapping: not
listed, not counted, ``in`` is False and ``[]`` a ``KeyError``, and writing
one is a ``ValueError``; ``flash``/``pop_flashes`` and the token methods
reach them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, MutableMapping
from typing import Any, Final, NamedTuple, NoReturn, TypeVar, overload

from ._rotation import check_rotation_grace
from ._units import human_size
from .clock import Clock
from .codec import Codec, decode_field, encode_field, field_expiry
from .errors import ConfigError, EncodeError, SessionStateError

__all__ = [
    "FLASH_PREFIX", "Flash", "LIFETIME_KEY", "PRINCIPAL_KEY", "RESERVED_PREFIX", "Session",
    "TOKEN_PREFIX",
]  # fmt: skip

log = logging.getLogger("shoal")

# Keys starting with "_shoal." are reserved for shoal's own values.
RESERVED_PREFIX: Final = "_shoal."
FLASH_PREFIX: Final = "_shoal.flash."
TOKEN_PREFIX: Final = "_shoal.token."
# The session's own lifetime (``Session.set_lifetime``): {"idle": s} or {"until": t}.
LIFETIME_KEY: Final = "_shoal.lifetime"
# Who the session belongs to (``Session.principal``): the user id, a string.
PRINCIPAL_KEY: Final = "_shoal.principal"
MAX_TOKENS_PER_NAME: Final = 32
_TOKEN_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


_T = TypeVar("_T")
_MISSING: Final = object()
# Exact types whose values cannot change in place: no re-encode at commit.
_IMMUTABLE: Final = frozenset({str, int, float, bool, type(None), bytes})


def _field_size(key: str, data: bytes) -> int:
    """What one field costs in the store: its key in UTF-8 and its encoded value."""
    return (len(key) if key.isascii() else len(key.encode("utf-8"))) + len(data)


class _Fields(dict[str, bytes]):
    """A session's encoded fields, with their total size (``size``) kept as they change.

    The total is summed once, when a request first needs it (its first
    write), then kept by every write and delete: ``[]=``, ``del``, ``pop``
    and ``clear``; the other mutating methods of ``dict`` would not keep it,
    and raise. So a limit check at ``set`` costs the same whatever the
    session holds, and a request that only reads pays nothing. Rejected:
    summing the sizes at each ``set`` (a session of 1000 keys would pay 1000
    additions per write), counting only at commit (the error must name the
    key), and a ``MutableMapping`` wrapper (reads in Python: 60% slower to
    load a 10-key session).
    """

    __slots__ = ("_size",)

    def __init__(self, data: Mapping[str, bytes] | None = None) -> None:
        self._size: int | None = None  # not summed yet
        if data:
            dict.update(self, data)

    @property
    def size(self) -> int:
        """Bytes the store keeps for these fields: every key in UTF-8 plus its value."""
        if self._size is None:
            # Two C-level passes: the keys' UTF-8 bytes, then the values'.
            self._size = len("".join(self).encode("utf-8")) + sum(map(len, self.values()))
        return self._size

    def __setitem__(self, key: str, value: bytes) -> None:
        if self._size is not None:
            old = dict.get(self, key)
            # _field_size inlined: this runs at every write.
            if old is None:
                self._size += (len(key) if key.isascii() else len(key.encode("utf-8"))) + len(value)
            else:
                self._size += len(value) - len(old)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        value = dict.pop(self, key)
        if self._size is not None:
            self._size -= _field_size(key, value)

    @overload
    def pop(self, key: str, /) -> bytes: ...
    @overload
    def pop(self, key: str, default: bytes, /) -> bytes: ...
    @overload
    def pop(self, key: str, default: _T, /) -> bytes | _T: ...
    def pop(self, key: str, default: object = _MISSING, /) -> object:
        if key in self:
            value = dict.get(self, key)
            del self[key]
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def clear(self) -> None:
        dict.clear(self)
        self._size = 0

    def copy(self) -> dict[str, bytes]:
        """A plain dict of the fields."""
        return dict(self)

    def _untracked(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("session fields keep a running size: set or delete one key at a time")

    update = setdefault = popitem = __ior__ = _untracked

    def size_with(self, key: str, data: bytes | None) -> tuple[int, int]:
        """``(size, number of keys)`` if ``key`` held ``data`` (None: were deleted)."""
        old = dict.get(self, key)
        size = self.size
        if old is None:
            if data is None:
                return size, len(self)
            return size + _field_size(key, data), len(self) + 1
        if data is None:
            return size - _field_size(key, old), len(self) - 1
        return size - len(old) + len(data), len(self)


class Flash(NamedTuple):
    """A message queued by ``Session.flash``, returned once by ``pop_flashes``."""

    category: str
    message: Any


class Session(MutableMapping[str, Any]):
    """A ``MutableMapping`` of one session's values, with per-key tracking."""

    def __init__(
        self,
        *,
        codec: Codec,
        clock: Clock,
        read_only: bool = False,
        loader: Callable[[Session], None] | None = None,
        on_lock: Callable[[Session], None] | None = None,
        on_renew: Callable[[Session], None] | None = None,
        max_session_bytes: int | None = None,
        max_keys: int | None = None,
    ) -> None:
        self._codec = codec
        # None: no limit. Checked at every write (``_check_limits``).
        self._max_bytes = max_session_bytes
        self._max_keys = max_keys
        self._clock = clock
        self._read_only = read_only
        self._loader = loader
        # Lock requests go back to the manager, which owns policies and I/O.
        self._on_lock = on_lock
        self._on_renew = on_renew
        self._values: dict[str, Any] = {}
        self._encoded = _Fields()
        self._expiry: dict[str, float] = {}
        self._versions: dict[str, int] = {}
        self._read: set[str] = set()
        self._written: set[str] = set()
        self._deleted: set[str] = set()
        self._stale: set[str] = set()  # per-key expired at load: delete on next save
        # The rest starts as the class attributes below: a request sets only
        # what it changes (issue 11: a session is made per request).

    # Deletes a once-only key in the store now; None without a store.
    _consume: Callable[[Session, str], bool] | None = None
    # The awaitable twins, for a session of ``manager.abegin``.
    _aconsume: Callable[[Session, str], Awaitable[bool]] | None = None
    _on_arenew: Callable[[Session], Awaitable[None]] | None = None
    _flash_seq = 0
    _id = ""
    _is_new = True
    _version = 0
    _created = _accessed = _expires = 0.0
    _invalidated = False
    _rotated = False
    _rotation_grace: float | None = None  # rotate(grace=...): None = the manager's
    _refresh = False  # refresh(): save at commit even when nothing changed
    _closed = False
    _committed = False
    # Where the commit happens and what to do instead, for the message of a
    # write that comes after it (the middleware and ``open`` say their own).
    _end_where = "by manager.commit()"
    _end_fix = "write before the commit"
    # What was loaded, kept before the first change so that a rolled-back
    # session reads as loaded; None while nothing changed (no copy).
    _at_load: tuple[dict[str, bytes], dict[str, float]] | None = None

    # -- filled in by the manager ----------------------------------------

    def _populate(
        self,
        *,
        session_id: str,
        is_new: bool,
        version: int,
        created: float,
        accessed: float,
        expires: float,
        fields: Mapping[str, bytes],
        field_versions: Mapping[str, int],
    ) -> None:
        self._id, self._is_new, self._version = session_id, is_new, version
        self._created, self._accessed, self._expires = created, accessed, expires
        self._versions = dict(field_versions)
        # Values are decoded on first use (``_decoded``): most requests read
        # a few keys of a session, and many read none. A field framed b"j"
        # has no expiry of its own: the common case is checked without a call.
        kept = None
        for data in fields.values():
            if data[:1] != b"j":
                kept = self._unexpired(fields)
                break
        self._encoded = _Fields(fields if kept is None else kept)  # sized in one pass

    def _unexpired(self, fields: Mapping[str, bytes]) -> dict[str, bytes]:
        """``fields`` without the keys whose own expiry passed or whose frame is unknown."""
        now = self._clock()
        kept = {}
        for key, data in fields.items():
            try:
                key_expires = field_expiry(data)
            except ValueError as exc:
                self._skip_undecodable(key, exc)
                continue
            if key_expires is not None and key_expires <= now:
                self._stale.add(key)
                continue
            kept[key] = data
            if key_expires is not None:
                self._expiry[key] = key_expires
        return kept

    def _decoded(self, key: str) -> bool:
        """Decode ``key``'s stored value on first use; False when absent or undecodable."""
        if key in self._values:
            return True
        data = self._encoded.get(key)
        if data is None:
            return False
        try:
            self._values[key] = decode_field(self._codec, data)[0]
        except Exception as exc:  # noqa: BLE001 - whatever a codec raises on foreign bytes
            del self._encoded[key]
            self._expiry.pop(key, None)
            self._skip_undecodable(key, exc)
            return False
        return True

    @staticmethod
    def _skip_undecodable(key: str, exc: Exception) -> None:
        # A record written by another codec or corrupted at rest: the key is
        # skipped (and kept in the store) rather than failing the whole
        # request with a 500.
        log.warning("session key %r cannot be decoded, skipped: %s", key, exc)

    def _meta(self) -> None:
        """Load on first use; data and metadata stay readable after the session closed."""
        loader, self._loader = self._loader, None
        if loader is not None:
            try:
                loader(self)
            except BaseException:
                self._loader = loader  # a failed load may be retried
                raise

    # Load on first use; after the commit the manager loads it read-only.
    _ensure = _meta

    def _check_writable(self) -> None:
        """Refuse a write to a closed or read-only session; no I/O, so call it first."""
        if self._closed:
            raise self._closed_error("this write was not saved")
        if self._read_only:
            raise SessionStateError(
                "this session was opened read_only; open it without read_only=True to write"
            )

    def _closed_error(self, consequence: str) -> SessionStateError:
        if self._committed:
            return SessionStateError(
                f"the session was already committed {self._end_where}; "
                f"{self._end_fix}; {consequence}"
            )
        return SessionStateError(
            f"the session was already rolled back (its changes were dropped); {consequence}"
        )

    def _set_end(self, where: str, fix: str) -> None:
        """Name where this session is committed, for the message of a late write."""
        self._end_where, self._end_fix = where, fix

    def _keep_loaded(self) -> None:
        """Before the first change: remember what was loaded, for after a rollback."""
        if self._at_load is None:
            self._at_load = (self._encoded.copy(), dict(self._expiry))

    def _expire_key(self, key: str) -> None:
        if key in self._expiry and self._expiry[key] <= self._clock():
            self._values.pop(key, None)
            self._encoded.pop(key, None)
            del self._expiry[key]
            self._stale.add(key)

    # -- the mapping -------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        if _reserved(key):
            raise KeyError(key)
        return self._get(key)

    def _get(self, key: str) -> Any:
        if self._loader is not None:
            self._meta()
        self._read.add(key)
        self._expire_key(key)
        if not self._decoded(key):
            raise KeyError(key)
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if _reserved(key):
            raise KeyError(key)
        self._del(key)

    def _del(self, key: str) -> None:
        self._check_writable()
        self._ensure()
        self._expire_key(key)
        if not self._decoded(key):
            raise KeyError(key)
        self._keep_loaded()
        del self._values[key]
        del self._encoded[key]
        self._expiry.pop(key, None)
        self._written.discard(key)
        self._deleted.add(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._listed())

    def _listed(self) -> dict[str, Any]:
        """What iteration lists, each key with its value decoded; no key counts as read.

        An undecodable key is not listed; shoal's own keys are not the user's.
        """
        if self._loader is not None:
            self._meta()
        if self._expiry:
            for key in list(self._expiry):
                self._expire_key(key)
        values = self._values
        return {
            key: values[key]
            for key in list(self._encoded)
            if not key.startswith(RESERVED_PREFIX) and self._decoded(key)
        }

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or _reserved(key):
            return False
        self._ensure()
        self._read.add(key)
        self._expire_key(key)
        return self._decoded(key)

    def __repr__(self) -> str:
        if self._loader is not None:
            state = "unloaded"
        else:
            state = f"{sum(1 for k in self._encoded if not _reserved(k))} keys"
        return f"<Session {state}{' read-only' if self._read_only else ''}>"

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``; with ``ttl``, the key alone expires after it.

        Raises ``EncodeError`` (a ``TypeError``) naming ``key`` when the value
        cannot be encoded; the session is then unchanged. Subclasses of str,
        int, float, dict and list are stored (and come back) as their base
        type. Keys starting with ``_shoal.`` are reserved (``ValueError``).
        """
        if not isinstance(key, str):
            raise TypeError(f"session keys are str, not {type(key).__name__}")
        if not key.isascii():
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                # Every store keeps keys as UTF-8; refuse here, not with a 500 at save.
                raise EncodeError(key, "the key is not valid UTF-8 text") from None
        if key.startswith(RESERVED_PREFIX):
            raise ValueError(
                f"session key {key!r}: keys starting with {RESERVED_PREFIX!r} are reserved "
                "for shoal's own values (flashes, tokens); choose another name"
            )
        self._set(key, value, ttl)

    def _set(self, key: str, value: Any, ttl: float | None = None) -> None:
        if self._closed or self._read_only:
            self._check_writable()
        if self._loader is not None:
            self._meta()
        expires = None if ttl is None else self._clock() + ttl
        data = encode_field(self._codec, key, value, expires)
        self._check_limits(key, data)
        if self._at_load is None:
            self._keep_loaded()
        self._values[key] = value
        self._encoded[key] = data
        if expires is None:
            if self._expiry:
                self._expiry.pop(key, None)
        else:
            self._expiry[key] = expires
        self._written.add(key)
        self._deleted.discard(key)

    def _check_limits(self, key: str, data: bytes) -> None:
        """Refuse a write that takes the session over ``max_session_bytes`` or ``max_keys``.

        Only a write that makes the session larger is refused: one that
        shrinks a session already over a limit (loaded under a higher one)
        goes through, so the application can still clean it up.
        """
        if self._max_bytes is None and self._max_keys is None:
            return
        size, count = self._encoded.size_with(key, data)
        if (
            self._max_bytes is not None
            and size > self._max_bytes
            and size > self._encoded.size
        ):
            raise EncodeError(
                key,
                f"the session would be {human_size(size)} ({size} bytes), over "
                f"max_session_bytes={self._max_bytes} ({human_size(self._max_bytes)}); keep large "
                "data elsewhere (a database, a file) and its id in the session, or raise "
                "max_session_bytes",
            )
        if self._max_keys is not None and count > self._max_keys and count > len(self._encoded):
            raise EncodeError(
                key,
                f"the session would have {count} keys, over max_keys={self._max_keys} "
                "(shoal's own flashes and tokens count too); keep a collection under one "
                "key, delete keys no longer used, or raise max_keys",
            )

    # -- lifecycle ---------------------------------------------------------

    def rotate(self, *, grace: float | None = None) -> None:
        """Give the session a new id, keeping its data.

        The old id stops opening the session at commit. For ``grace``
        seconds (None: the manager's ``rotation_grace``, 30 by default) it
        still leads to the new session, so requests in flight and a lost
        Set-Cookie log no one out (docs/security.md). At login, where the
        old id may be one an attacker fixed, pass ``grace=0``: it is dead
        at once.
        """
        self._check_writable()
        self._ensure()
        if grace is not None:
            grace = check_rotation_grace(grace, "rotate(grace=...)")
        self._rotated = True
        self._rotation_grace = grace

    def invalidate(self) -> None:
        """End the session (logout): its data is dropped and its id refused at commit.

        Later writes in the same request go to a fresh, empty session (as
        Django's ``flush()``): "log out, then flash 'You have been logged out'"
        works. The fresh session is stored under a new id at commit only if
        something was written to it; otherwise the client's cookie is cleared.
        """
        self._check_writable()
        self._ensure()
        self._keep_loaded()
        self._invalidated = True
        self._rotated = False
        for tracked in (
            self._values, self._encoded, self._expiry, self._versions,
            self._read, self._written, self._deleted, self._stale,
        ):
            tracked.clear()

    # -- who it belongs to ---------------------------------------------------

    @property
    def principal(self) -> str | None:
        """The user id set at login (``session.principal = user_id``), or None.

        Kept in the session itself (a ``_shoal.`` key), so every process and
        replica knows it, and indexed by the manager (``sessions_of``,
        ``invalidate_all``).
        """
        self._meta()
        if not self._decoded(PRINCIPAL_KEY):
            return None
        value = self._values[PRINCIPAL_KEY]
        return value if isinstance(value, str) else None

    @principal.setter
    def principal(self, user_id: str | int | None) -> None:
        """Set (login) or clear the principal; either way the id rotates at commit.

        A login must not leave the pre-login id usable (session fixation): the
        old id gets a tombstone at commit, as with ``rotate(grace=0)``, with
        no rotation grace. An ``int`` is
        kept as its decimal string, so ``42`` and ``"42"`` are one principal.
        """
        if isinstance(user_id, bool) or not isinstance(user_id, (str, int, type(None))):
            raise TypeError(f"session.principal must be a str, an int or None, not {user_id!r}")
        if isinstance(user_id, str) and not user_id:
            raise ValueError("session.principal must not be empty; set None to clear it")
        self._check_writable()
        self._ensure()
        if user_id is None:
            if self._decoded(PRINCIPAL_KEY):
                self._del(PRINCIPAL_KEY)
        else:
            self._set(PRINCIPAL_KEY, str(user_id))
        self.rotate(grace=0)  # a login: the old id may be one an attacker fixed

    # -- the session's own lifetime ---------------------------------------

    def refresh(self) -> None:
        """Save this session at commit even if nothing changed, so its expiry slides from now.

        Django's ``SESSION_SAVE_EVERY_REQUEST``: the store's expiry moves to
        now plus the session's lifetime. A new session is then stored,
        empty or not (Django's ``save()`` of a new session creates it).
        """
        self._check_writable()
        self._ensure()
        self._refresh = True

    def set_lifetime(self, seconds: float | None = None, *, until: float | None = None) -> None:
        """Give this session a lifetime of its own, instead of the manager's ``idle_timeout``.

        ``seconds``: the session ends that long after its last save (each
        save slides it, as Django's ``set_expiry(300)``). ``until``: it ends at
        that time (seconds since the epoch, as Django's ``set_expiry(datetime)``),
        whatever the requests do. Neither: back to the manager's idle timeout.
        A value in the past ends the session at its next save. The manager's
        ``absolute_timeout`` caps every lifetime, and a read's touch (when the
        manager's ``touch_interval`` is not None) extends by this lifetime
        too (never past ``until``). Kept in the session itself (a
        ``_shoal.`` key), so every process, replica and policy sees it.
        """
        if seconds is not None and until is not None:
            raise ValueError("give seconds (a sliding lifetime) or until (a fixed end), not both")
        given = seconds if until is None else until
        if given is not None and (
            isinstance(given, bool)
            or not isinstance(given, (int, float))
            or given != given  # NaN
            or given in (float("inf"), float("-inf"))
        ):
            raise ValueError(f"session lifetime {given!r}: give a finite number of seconds")
        self._check_writable()
        self._ensure()
        if given is None:
            self._expire_key(LIFETIME_KEY)
            if self._decoded(LIFETIME_KEY):
                self._del(LIFETIME_KEY)
            return
        kind = "idle" if until is None else "until"
        self._set(LIFETIME_KEY, {kind: float(given)})

    @property
    def lifetime(self) -> float | None:
        """The sliding lifetime ``set_lifetime(seconds)`` gave, or None."""
        return self._lifetime().get("idle")

    @property
    def lifetime_until(self) -> float | None:
        """The fixed end ``set_lifetime(until=...)`` gave (epoch seconds), or None."""
        return self._lifetime().get("until")

    def _lifetime(self) -> dict[str, float]:
        """The lifetime field, read without counting as a read of the request."""
        self._meta()
        if not self._decoded(LIFETIME_KEY):
            return {}
        value = self._values[LIFETIME_KEY]
        if isinstance(value, dict) and len(value) == 1:
            kind, number = next(iter(value.items()))
            if kind in ("idle", "until") and isinstance(number, (int, float)):
                return {kind: float(number)}
        return {}  # written by something else: the manager's default applies

    def _idle_timeout(self, default: float, now: float) -> float:
        """The idle timeout this session's next write passes to the store."""
        if self._loader is not None:
            self._meta()
        if LIFETIME_KEY not in self._encoded:
            return default
        own = self._lifetime()
        # Negative when the lifetime already passed: the record's expiry is
        # then in the past (purged once that is older than the grace period).
        if "idle" in own:
            return own["idle"]
        if "until" in own:
            return own["until"] - now
        return default

    # -- locking -------------------------------------------------------------

    def lock(self) -> None:
        """Hold this session exclusively until commit (the ``serialized`` policy).

        For a view that must not interleave with other requests of the same
        session (a checkout, a counter) while the application's default policy
        is lock-free. The lease is taken with the load, so call ``lock()``
        before the first access of any kind (``session.id`` included);
        afterwards it raises ``SessionStateError``, because a lock taken after
        the load would not protect what was already read.
        """
        if self._closed:
            raise self._closed_error("a lock now would protect nothing")
        if self._loader is None:
            raise SessionStateError(
                "session.lock() was called after the session was loaded; call it first, "
                "before any access to the session, or open it with policy='serialized'"
            )
        if self._read_only:
            raise SessionStateError(
                "a read_only session takes no lock; open it without read_only=True to lock it"
            )
        if self._on_lock is None:
            raise SessionStateError("this session has no manager that can lock it")
        self._on_lock(self)

    def renew_lock(self) -> None:
        """Extend this request's lease by the manager's ``lock_lease``, from now.

        Call it from long requests, well before the lease runs out. Raises
        ``LockLost`` when the lease was already lost (it expired and may have
        been taken by another request): the request must stop, its save would
        be refused. Does nothing when the request holds no lease (not loaded
        yet, a new session, or a policy that does not lock).
        """
        if self._closed:
            raise self._closed_error("there is no lease left to renew")
        if self._on_renew is not None:
            self._on_renew(self)

    async def arenew_lock(self) -> None:
        """``renew_lock`` for a session of ``manager.abegin``/``open_async``, awaited."""
        if self._closed:
            raise self._closed_error("there is no lease left to renew")
        if self._on_arenew is not None:
            await self._on_arenew(self)

    # -- once-only values ----------------------------------------------------

    def flash(self, message: Any, category: str = "message") -> None:
        """Queue ``message`` for the next ``pop_flashes`` (this request or a later one).

        Each flash is a key of its own, so flashes queued by concurrent
        requests all survive under the merge policy. ``message`` is stored as
        any session value (``markupsafe.Markup`` comes back as a plain str);
        one that cannot be stored raises ``EncodeError``.
        """
        self._flash_seq += 1
        stamp = f"{self._clock():017.6f}.{self._flash_seq:04d}.{secrets.token_hex(3)}"
        key = FLASH_PREFIX + stamp
        try:
            self._set(key, [category, message])
        except EncodeError as exc:
            # Name the caller's flash(), not the internal key it was going to.
            raise EncodeError(key, exc.reason, subject="flash message") from exc.__cause__

    def pop_flashes(self, category: str | None = None) -> list[Flash]:
        """The queued flashes (of ``category``, or all), oldest first; read once.

        They are deleted from the session as they are returned, so the next
        request does not see them again once this one is saved.
        """
        self._check_writable()
        self._ensure()
        found: list[Flash] = []
        for key in self._own_keys(FLASH_PREFIX):
            value = self._get(key)
            kind, message = value if isinstance(value, list) and len(value) == 2 else ("", value)
            if category is None or kind == category:
                found.append(Flash(str(kind), message))
                self._del(key)
        return found

    def _own_keys(self, prefix: str) -> list[str]:
        """The live, decodable keys under one of shoal's prefixes, sorted."""
        keys = []
        for key in sorted(k for k in self._encoded if k.startswith(prefix)):
            self._expire_key(key)
            if self._decoded(key):
                keys.append(key)
        return keys

    def issue_token(self, name: str, *, ttl: float | None = None) -> str:
        """A new once-only token for action ``name`` (put it in the form or link).

        Only a hash is kept in the session. Several tokens of one name may be
        outstanding (several tabs); beyond ``MAX_TOKENS_PER_NAME`` the oldest
        is dropped. ``ttl`` limits how long the token is accepted.
        """
        self._check_tokens(name)
        prefix = f"{TOKEN_PREFIX}{name}."
        outstanding = []
        for key in [k for k in self._encoded if k.startswith(prefix)]:
            self._expire_key(key)
            value = self._values.get(key) if self._decoded(key) else None
            if isinstance(value, dict):
                outstanding.append((float(value.get("at", 0.0)), key))
        outstanding.sort()
        for _, key in outstanding[: max(0, len(outstanding) - MAX_TOKENS_PER_NAME + 1)]:
            self._del(key)
        token = secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode("ascii")).hexdigest()
        self._set(prefix + digest[:32], {"h": digest, "at": self._clock()}, ttl=ttl)
        return token

    def consume_token(self, name: str, token: object) -> bool:
        """True at most once per token issued by ``issue_token(name)``, cluster-wide.

        The check-and-delete runs in the store at once, not at commit: the
        token key is deleted with ``expect_fields`` on its version, so of two
        requests (on any nodes, or a replayed request or cookie) only one
        sees True, before either runs the action's side effects. Without a
        store (``replica="only"``) this raises ``ConfigError``.
        """
        key = self._token_key(name, token)
        if key is None:
            return False
        # A token issued by this very request is not stored yet: nobody else has it.
        consumed = key in self._written or (
            self._consume is not None and self._consume(self, key)
        )
        return self._forget_token(key, consumed)

    async def aconsume_token(self, name: str, token: object) -> bool:
        """``consume_token`` for a session of ``manager.abegin``/``open_async``, awaited."""
        key = self._token_key(name, token)
        if key is None:
            return False
        consumed = key in self._written or (
            self._aconsume is not None and await self._aconsume(self, key)
        )
        return self._forget_token(key, consumed)

    def _token_key(self, name: str, token: object) -> str | None:
        """The session key of ``token`` when this session holds it, else None."""
        self._check_tokens(name)
        if not isinstance(token, str) or not 0 < len(token) <= 256:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        key = f"{TOKEN_PREFIX}{name}.{digest[:32]}"
        self._expire_key(key)
        stored = self._values.get(key) if self._decoded(key) else None
        if not isinstance(stored, dict) or not hmac.compare_digest(
            str(stored.get("h", "")), digest
        ):
            return None
        return key

    def _forget_token(self, key: str, consumed: bool) -> bool:
        """Drop a consumed (or lost) token from this request's view; ``consumed``."""
        for store in (self._values, self._encoded, self._expiry, self._versions):
            store.pop(key, None)
        self._written.discard(key)
        self._read.discard(key)
        return consumed

    def _check_tokens(self, name: str) -> None:
        self._check_writable()
        self._ensure()
        if self._consume is None:
            raise ConfigError(
                "once-only tokens need a session store that decides who consumed them: "
                "without one (replica='only') a copied cookie replays them; "
                "use replica=True with a store"
            )
        if not isinstance(name, str) or not _TOKEN_NAME.fullmatch(name):
            raise ValueError(f"token name {name!r}: use 1-64 of A-Z a-z 0-9 _ -")

    # -- what the request did ---------------------------------------------

    @property
    def id(self) -> str:
        """The session id to send to the client; a new one for a new session."""
        self._meta()
        return self._id

    @property
    def is_new(self) -> bool:
        """True when no stored session was loaded (new or unknown id)."""
        self._meta()
        return self._is_new

    @property
    def version(self) -> int:
        """The store version this request loaded (0 for a new session)."""
        self._meta()
        return self._version

    @property
    def created(self) -> float:
        self._meta()
        return self._created

    @property
    def accessed(self) -> float:
        self._meta()
        return self._accessed

    @property
    def expires(self) -> float:
        """When the session ends if it sees no further activity."""
        self._meta()
        return self._expires

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def loaded(self) -> bool:
        """False while nothing has touched a lazily loaded session."""
        return self._loader is None

    @property
    def invalidated(self) -> bool:
        return self._invalidated

    @property
    def rotated(self) -> bool:
        return self._rotated

    @property
    def keys_read(self) -> frozenset[str]:
        return frozenset(self._read)

    @property
    def keys_written(self) -> frozenset[str]:
        return frozenset(self._written)

    @property
    def keys_deleted(self) -> frozenset[str]:
        return frozenset(self._deleted)

    @property
    def modified(self) -> bool:
        """True when the request changed data (in-place mutations included)."""
        if self._loader is not None or self._read_only:
            return False
        self._detect_mutations()
        return bool(self._written or self._deleted or self._invalidated or self._rotated)

    def _detect_mutations(self) -> None:
        """Mark values whose encoding changed as written (in-place edits).

        Written keys too: ``session.setdefault("cart", []).append(x)`` sets
        the list, then changes it; the bytes encoded at ``set`` would lose
        the append. Rejected: re-encoding only read keys (one encode less per
        written key at commit, and that common Flask idiom saved ``[]``).
        A value of an immutable built-in type (exactly str, int, float,
        bool, None, bytes) cannot have changed since it was read or set, so
        it is not encoded again (issue 11: one encode less per such key).
        """
        values, deleted = self._values, self._deleted
        # The written set itself when nothing was read (no union built): a key
        # marked written below is in it already, so it never grows meanwhile.
        read, written = self._read, self._written
        for key in (read | written) if read else written:
            value = values.get(key, _MISSING)
            if value is not _MISSING and type(value) not in _IMMUTABLE and key not in deleted:
                data = encode_field(self._codec, key, value, self._expiry.get(key))
                if data != self._encoded[key]:
                    self._check_limits(key, data)  # at commit: names the key edited in place
                    self._keep_loaded()
                    self._encoded[key] = data
                    self._written.add(key)

    def _field_versions(self) -> Mapping[str, int]:
        return self._versions

    def _encoded_fields(self, keys: Collection[str] | None = None) -> dict[str, bytes]:
        if keys is None:
            return self._encoded.copy()
        return {key: self._encoded[key] for key in keys if key in self._encoded}

    def _close(self, *, committed: bool) -> None:
        """End the request's use: committed (a snapshot of what was saved) or rolled back.

        Idempotent: a rollback after the commit (the middleware cleaning up
        after an error in the body) leaves the committed snapshot as it is.
        """
        if self._closed:
            return
        self._closed = True
        self._committed = committed
        if not committed:
            # Reads after a rollback see the session as loaded: the changes
            # were dropped. Rejected: keeping the unsaved values (what Flask's
            # and Django's objects do), which reads data the store never had.
            if self._at_load is not None:
                self._encoded = _Fields(self._at_load[0])
                self._expiry = self._at_load[1]
            self._values.clear()  # in-place edits too: decode again from the bytes
        self._at_load = None


def _reserved(key: object) -> bool:
    return isinstance(key, str) and key.startswith(RESERVED_PREFIX)
