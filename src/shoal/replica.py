"""The client-side replica: a sealed copy of the session kept by the client.

After a request that changed (or touched) its session, the client is handed
the session sealed (``shoal.sealing``) in one or more cookies. When a later
request reaches a node whose store has no live record for that id (flushed,
restarted without persistence, failed over, a node that kept sessions in
memory), or whose store cannot be reached, the replica brings the session
back. With ``replica="only"`` there is no store at all: the replica is the
session (a stateless encrypted cookie session).

Everything here is transport-neutral (no WSGI, no ASGI, no cookies):
``ReplicaStore`` sits between the manager and the real store for one
request. ``shoal.transports`` carries the sealed wire in cookies (chunked
when large) and back.

Ordering: a session carries a *generation*, ``_shoal.gen``, bumped by every
write; it is kept as a field in the store (hidden from the ``Session``) and
sent, authenticated, in the replica's header. Store record versions cannot
order copies across stores (every store counts on its own, and a restore
starts at 1), generations can. Rules, in ``ReplicaStore.load``:

- store has a live record, replica generation not higher: the store wins.
- store has a live record, replica generation higher: the store lost writes
  (failover, a node's stale memory); the replica overwrites it (one
  compare-and-set on the store version) and the request proceeds on it.
- store has no record (ABSENT): the replica is written back with
  ``create`` (create-if-absent) before the request runs, then loaded.
- store has a tombstone (INVALIDATED) or an expired record: never restored.
- store unreachable: the request is served from the replica alone; its
  writes go into the next replica, which wins once the store is back.

Once-only tokens (``session.issue_token``) never go into a replica: a replayed
replica could otherwise bring a consumed token back after a store flush.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from .errors import ConfigError, StoreUnavailable
from .ids import hash_id, session_ref
from ._steps import BASE, Steps, StepsStore, call
from .sealing import Sealer, Secret
from .session import TOKEN_PREFIX
from .stores.state import (
    StoredRecord,
    apply_step,
    create_step,
    invalidate_step,
    load_step,
    renew_step,
    unlock_step,
)
from .stores.base import (
    ApplyResult,
    ApplyStatus,
    Change,
    LoadResult,
    LoadStatus,
    LockRequest,
    NewRecord,
    Record,
    RecordKey,
    Touch,
)

__all__ = [
    "GEN_FIELD",
    "ReplicaStats",
    "ReplicaStore",
    "Replicator",
]

log = logging.getLogger("shoal")

GEN_FIELD: Final = "_shoal.gen"
"""The reserved store field holding the session's generation."""

MIN_MAX_BYTES: Final = 512
MAX_MAX_BYTES: Final = 65536
_SNAP_FORMAT: Final = 1
_SNAP_HEAD: Final = struct.Struct(">Bdddd")
_ENTRY: Final = struct.Struct(">II")
_EXPIRY: Final = struct.Struct(">d")
_MAX_GEN_DIGITS: Final = 19


# -- generations ---------------------------------------------------------------


def _encode_gen(gen: int) -> bytes:
    # A plain JSON frame (codec.encode_field layout), so tools that decode
    # every field of a record still can.
    return b"j" + str(gen).encode("ascii")


def _decode_gen(data: bytes | None) -> int:
    if data is None or data[:1] != b"j" or not data[1:].isdigit():
        return 0
    return int(data[1:])


def wire_gen(wire: str | None) -> int | None:
    """The generation in a replica's public header, without opening it."""
    if not wire:
        return None
    head, sep, _ = wire.partition(".")
    # isascii: str.isdigit() also accepts "³", which int() refuses (tests/fuzz/corpus/replica/).
    if not sep or not (head.isascii() and head.isdigit()) or len(head) > _MAX_GEN_DIGITS:
        return None
    return int(head)


# -- snapshot <-> bytes ----------------------------------------------------------
# A format of its own rather than the stores' ``pack_fields``: replicas live
# in clients for days and must stay readable when a store's layout changes.
# Field versions are not kept: they are per store, and a replica is only
# ever used whole (a restore starts every field at version 1).


def _pack(rec: StoredRecord, fields: Mapping[str, bytes]) -> bytes:
    parts = [
        _SNAP_HEAD.pack(_SNAP_FORMAT, rec.created, rec.accessed, rec.expires, rec.absolute_expires)
    ]
    for key, value in fields.items():
        raw = key.encode("utf-8")
        parts += [_ENTRY.pack(len(raw), len(value)), raw, value]
    return b"".join(parts)


def _unpack(data: bytes, gen: int) -> StoredRecord | None:
    try:
        fmt, created, accessed, expires, absolute = _SNAP_HEAD.unpack_from(data, 0)
        if fmt != _SNAP_FORMAT:
            return None
        pos, fields = _SNAP_HEAD.size, {}
        while pos < len(data):
            klen, vlen = _ENTRY.unpack_from(data, pos)
            pos += _ENTRY.size
            key = data[pos : pos + klen].decode("utf-8")
            value = data[pos + klen : pos + klen + vlen]
            if len(value) != vlen:
                return None
            fields[key] = value
            pos += klen + vlen
    except (struct.error, UnicodeDecodeError):
        return None
    return StoredRecord(
        version=gen,
        created=created,
        accessed=accessed,
        expires=expires,
        absolute_expires=absolute,
        fields=fields,
        field_versions={key: gen for key in fields},
    )


def _field_expired(value: bytes, now: float) -> bool:
    """True for a per-key-expiry frame (``codec.encode_field``) past its time."""
    if value[:1] != b"x" or len(value) < 1 + _EXPIRY.size:
        return False
    (expires,) = _EXPIRY.unpack_from(value, 1)
    return bool(expires <= now)


def _replicable(key: str) -> bool:
    return not key.startswith(TOKEN_PREFIX) and key != GEN_FIELD


# -- per-manager state -------------------------------------------------------------


@dataclass
class ReplicaStats:
    """Counters for monitoring, one set per manager (read them, never reset)."""

    sealed: int = 0  # replicas sent to clients
    skipped_too_large: int = 0  # over replica_max_bytes: not sent, old one cleared
    restored: int = 0  # written back into a store that had lost the session
    served: int = 0  # requests served from a replica while the store was down
    rejected: int = 0  # replicas that did not open (tampered, foreign, other session)
    expired: int = 0  # replicas that opened but whose session had ended
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def bump(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


class Replicator:
    """Seals and opens the replicas of one manager's sessions."""

    def __init__(
        self,
        *,
        app_id: str,
        secret_keys: Sequence[str | bytes | Secret],
        max_bytes: int,
        idle_timeout: float,
    ) -> None:
        if not MIN_MAX_BYTES <= max_bytes <= MAX_MAX_BYTES:
            raise ConfigError(
                f"replica_max_bytes={max_bytes}: use {MIN_MAX_BYTES} to {MAX_MAX_BYTES} "
                "(browsers keep about 4 KB per cookie and proxies limit the Cookie header; "
                "6144 fits the common 8 KB header limits)"
            )
        self.app_id = app_id
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        # A replica never decompresses beyond 64x its cap (a guard only:
        # nothing without a key can make a valid blob).
        self.sealer = Sealer(secret_keys, purpose="shoal replica", max_plain=64 * max_bytes)
        self.stats = ReplicaStats()
        # Told of each session written back into the store (the manager's
        # ``restored`` event and metric); None: nobody asked.
        self.on_restored: Callable[[RecordKey], None] | None = None
        # The manager's node id, for log lines (a callable: a forked worker's
        # default node id is its own).
        self.node_id: Callable[[], str] = lambda: "-"

    def __repr__(self) -> str:
        return f"<Replicator app_id={self.app_id!r} {self.sealer!r} max_bytes={self.max_bytes}>"

    def _context(self, key: RecordKey, gen: int) -> bytes:
        # The associated data: the replica opens only for this app, this
        # session and this generation (which is public in the header).
        return b"\x00".join(
            [b"shoal replica", key.app_id.encode(), key.id_hash.encode(), str(gen).encode()]
        )

    def seal(self, key: RecordKey, rec: StoredRecord, gen: int, now: float) -> str | None:
        """The replica of ``rec`` as text; None (and a warning) when over the cap."""
        kept = {
            k: v for k, v in rec.fields.items() if _replicable(k) and not _field_expired(v, now)
        }
        data = _pack(rec, kept)
        wire = f"{gen}.{self.sealer.seal(data, self._context(key, gen))}"
        if len(wire) > self.max_bytes:
            self.stats.bump("skipped_too_large")
            log.warning(
                "node %s: session %s: replica of %d bytes is over replica_max_bytes=%d; not "
                "sent (raise replica_max_bytes, or keep less in the session)",
                self.node_id(),
                session_ref(key.id_hash),
                len(wire),
                self.max_bytes,
            )
            return None
        self.stats.bump("sealed")
        return wire

    def open(self, key: RecordKey, wire: str, now: float) -> tuple[int, StoredRecord] | None:
        """The session sealed in ``wire`` for ``key``, if valid and not ended.

        A wire longer than ``max_bytes`` is rejected before any decoding or
        decryption: ``seal`` never sends one, so it is forged or foreign.
        """
        gen = wire_gen(wire) if len(wire) <= self.max_bytes else None
        data = None
        if gen is not None:
            data = self.sealer.open(wire.partition(".")[2], self._context(key, gen))
        rec = _unpack(data, gen) if data is not None and gen is not None else None
        if rec is None or gen is None:
            self.stats.bump("rejected")
            log.debug("session %s: replica ignored (does not open)", session_ref(key.id_hash))
            return None
        if rec.expires <= now or rec.absolute_expires <= now:
            self.stats.bump("expired")
            return None
        return gen, rec

    def view(self, store_url: str | None, wire: str | None) -> ReplicaStore:
        """What one request works on: the store at ``store_url`` (None: none) through ``wire``."""
        return ReplicaStore(self, store_url, wire)

    def outgoing(
        self, store: ReplicaStore, session_id: str, *, ended: bool, now: float
    ) -> tuple[str | None, bool]:
        """After a commit: ``(replica to send, clear the client's replica)``."""
        if ended:
            return None, True
        if not session_id or not store.changed_any():
            return None, False
        key = RecordKey(self.app_id, hash_id(session_id))
        rec = store.state(key)
        if rec is None or rec.invalidated or not store.changed(key):
            return None, False
        wire = self.seal(key, rec, store.gen(key), now)
        return wire, wire is None


# -- the per-request store ----------------------------------------------------------


def _strip(record: Record) -> Record:
    """The record as the session sees it: without the generation field."""
    if GEN_FIELD not in record.fields:
        return record
    # Built directly: dataclasses.replace costs several microseconds a call.
    return Record(
        version=record.version,
        created=record.created,
        accessed=record.accessed,
        expires=record.expires,
        absolute_expires=record.absolute_expires,
        fields={k: v for k, v in record.fields.items() if k != GEN_FIELD},
        field_versions={k: v for k, v in record.field_versions.items() if k != GEN_FIELD},
    )


def _writes_of(change: Change, extra: Mapping[str, bytes] | None = None) -> Change:
    """``change`` with ``extra`` fields set, or (no ``extra``) its writes without its checks."""
    if extra is None:
        return Change(
            idle_timeout=change.idle_timeout,
            set=change.set,
            delete=change.delete,
            replace=change.replace,
        )
    return Change(
        idle_timeout=change.idle_timeout,
        set={**change.set, **extra},
        delete=change.delete,
        replace=change.replace,
        expect_version=change.expect_version,
        expect_fields=change.expect_fields,
        lease_token=change.lease_token,
        release=change.release,
    )


def _tombstone_seed(rec: StoredRecord) -> NewRecord:
    return NewRecord(
        created=rec.created, expires=rec.absolute_expires, absolute_expires=rec.absolute_expires
    )


class ReplicaStore(StepsStore):
    """One request's view of the store through the client's replica, written as steps.

    In front of a real store (``replica=True``) it forwards every call,
    restores from the replica where the store lost the session, keeps the
    generation field, and mirrors what was written so the next replica can be
    sealed without another round trip. Without a store (``replica="only"``),
    or once the real store failed at load, it runs the store contract's pure
    steps on the replica alone. Not shared between requests or threads.

    Its methods are ``shoal._steps`` generators: the manager's
    runner drives them (a ``StepsStore``), the real store's calls are ``BASE``
    operations, so one view serves the sync and the async manager alike.
    """

    def __init__(self, replicator: Replicator, url: str | None, wire: str | None) -> None:
        self.url = url if url is not None else "replica:only"
        self._rep = replicator
        self._inner = url is not None  # a real store stands behind the view
        self._wire = wire
        self._local = not self._inner  # serve from the replica alone
        self._records: dict[RecordKey, StoredRecord] = {}  # without the gen field
        self._gens: dict[RecordKey, int] = {}
        self._changed: set[RecordKey] = set()
        self._created: set[RecordKey] = set()
        self._store_held = False  # the real store returned this session live
        self._opened: dict[RecordKey, tuple[int, StoredRecord] | None] = {}

    def __repr__(self) -> str:
        mode = "local" if self._local else "mirror"
        return f"<ReplicaStore {mode} over {self.url!r}>"

    # -- what the replica says --------------------------------------------------

    def state(self, key: RecordKey) -> StoredRecord | None:
        return self._records.get(key)

    def gen(self, key: RecordKey) -> int:
        return self._gens.get(key, 0)

    def changed(self, key: RecordKey) -> bool:
        return key in self._changed

    def changed_any(self) -> bool:
        return bool(self._changed)

    def _seed(self, key: RecordKey, now: float) -> tuple[int, StoredRecord] | None:
        """The client's replica for ``key``, opened once per request."""
        if self._wire is None:
            return None
        if key not in self._opened:
            self._opened[key] = self._rep.open(key, self._wire, now)
        return self._opened[key]

    def _keep(self, key: RecordKey, rec: StoredRecord, gen: int, *, changed: bool) -> None:
        self._records[key] = rec
        self._gens[key] = gen
        if changed:
            self._changed.add(key)

    def _go_local(self, key: RecordKey, seed: tuple[int, StoredRecord]) -> None:
        self._local = True
        self._rep.stats.bump("served")
        log.warning(
            "node %s: session store %s unavailable; serving session %s from its replica",
            self._rep.node_id(),
            self.url,
            session_ref(key.id_hash),
        )
        gen, rec = seed
        self._keep(key, replace(rec), gen, changed=False)

    @property
    def _forwards(self) -> bool:
        """Calls go to the real store (not served from the replica alone)."""
        return self._inner and not self._local

    def _restored(self, key: RecordKey) -> Steps[None]:
        self._rep.stats.bump("restored")
        if self._rep.on_restored is not None:
            yield call(self._rep.on_restored, key)

    # -- the contract, as steps ----------------------------------------------------

    def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> Steps[LoadResult]:
        if self._forwards:
            try:
                result = yield from self._reconcile(key, now, touch, lock)
            except StoreUnavailable:
                seed = self._seed(key, now)
                if seed is None:
                    raise
                self._go_local(key, seed)
            else:
                if result.record is None:
                    return result
                record = _strip(result.record)
                self._mirror_load(key, result.record, record, now)
                return LoadResult(result.status, record, result.locked_until)
        if key not in self._records:
            seed = self._seed(key, now)
            if seed is not None:
                self._keep(key, replace(seed[1]), seed[0], changed=False)
        before = self._records.get(key)
        result, outcome = load_step(before, now=now, touch=touch, lock=lock)
        if isinstance(outcome, StoredRecord):
            # A touch in local mode slides the idle expiry: the replica is re-sent.
            touched = before is None or outcome.accessed != before.accessed
            self._keep(key, outcome, self.gen(key), changed=touched)
        return result

    def _reconcile(
        self,
        key: RecordKey,
        now: float,
        touch: Touch | None,
        lock: LockRequest | None,
    ) -> Steps[LoadResult]:
        """Load from the store, restoring from the replica where it lost the session."""
        result: LoadResult = yield BASE.load(key, now=now, touch=touch, lock=lock)
        if result.status is LoadStatus.LOADED:
            assert result.record is not None
            stored_gen = _decode_gen(result.record.fields.get(GEN_FIELD))
            if (wire_gen(self._wire) or 0) <= stored_gen:
                return result  # the usual case: no crypto at all
            seed = self._seed(key, now)
            if seed is None or seed[0] <= stored_gen:
                return result
            yield from self._overwrite(key, result.record, seed, now, lock)
        elif result.status is LoadStatus.ABSENT:
            seed = self._seed(key, now)
            if seed is None:
                return result
            gen, rec = seed
            idle = touch.idle_timeout if touch is not None else self._rep.idle_timeout
            restored = NewRecord(
                created=rec.created,
                expires=min(now + idle, rec.absolute_expires),
                absolute_expires=rec.absolute_expires,
                fields={**rec.fields, GEN_FIELD: _encode_gen(gen)},
            )
            # Create-if-absent: a tombstone or a record another request
            # restored first wins, and the load below returns it.
            if (yield BASE.create(key, restored, now=now, lock=lock)):
                yield from self._restored(key)
                log.info(
                    "node %s: session %s restored from its replica",
                    self._rep.node_id(), session_ref(key.id_hash),
                )  # fmt: skip
        else:
            return result  # EXPIRED, INVALIDATED, LOCKED: the store decides
        reloaded: LoadResult = yield BASE.load(key, now=now, touch=touch, lock=lock)
        return reloaded

    def _overwrite(
        self,
        key: RecordKey,
        stored: Record,
        seed: tuple[int, StoredRecord],
        now: float,
        lock: LockRequest | None,
    ) -> Steps[None]:
        """Replace an older live record by the replica, if nobody wrote meanwhile."""
        gen, rec = seed
        change = Change(
            idle_timeout=self._rep.idle_timeout,
            set={**rec.fields, GEN_FIELD: _encode_gen(gen)},
            # Once-only tokens stay as the store has them: the store decides.
            delete=[k for k in stored.fields if _replicable(k) and k not in rec.fields],
            expect_version=stored.version,
            lease_token=lock.token if lock is not None else None,
        )
        applied: ApplyResult = yield BASE.apply(key, change, now=now)
        if applied.status is ApplyStatus.OK:
            yield from self._restored(key)
            log.info(
                "node %s: session %s: the store held an older copy; restored from the replica",
                self._rep.node_id(),
                session_ref(key.id_hash),
            )

    def _mirror_load(self, key: RecordKey, stored: Record, record: Record, now: float) -> None:
        """Keep what the store returned (``record``: ``stored`` without the gen field)."""
        self._store_held = True
        gen = _decode_gen(stored.fields.get(GEN_FIELD))
        rec = StoredRecord(
            version=record.version,
            created=record.created,
            accessed=record.accessed,
            expires=record.expires,
            absolute_expires=record.absolute_expires,
            fields=dict(record.fields),
            field_versions=dict(record.field_versions),
        )
        # Re-send when the store touched it (the replica's expiry slides too)
        # or when the client's replica is not this generation.
        stale = self._wire is not None and wire_gen(self._wire) != gen
        self._keep(key, rec, gen, changed=record.accessed == now or stale)

    def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> Steps[bool]:
        gen = max(self._gens.values(), default=0) + 1  # a rotation continues the count
        if self._forwards:
            tagged = replace(record, fields={**record.fields, GEN_FIELD: _encode_gen(gen)})
            try:
                created: bool = yield BASE.create(key, tagged, now=now, lock=lock)
            except StoreUnavailable:
                if self._store_held:
                    raise  # a session the store holds is saved there, or loudly not at all
                self._local = True
                self._rep.stats.bump("served")
                log.warning(
                    "node %s: session store %s unavailable; new session kept in its replica",
                    self._rep.node_id(), self.url,
                )  # fmt: skip
            else:
                if created:
                    self._created_locally(key, record, now, gen)
                return created
        ok, outcome = create_step(self._records.get(key), record, now=now, lock=lock)
        if ok and isinstance(outcome, StoredRecord):
            self._keep(key, outcome, gen, changed=True)
            self._created.add(key)
        return ok

    def _created_locally(self, key: RecordKey, record: NewRecord, now: float, gen: int) -> None:
        _, outcome = create_step(None, record, now=now, lock=None)
        assert isinstance(outcome, StoredRecord)
        self._keep(key, outcome, gen, changed=True)
        self._created.add(key)

    def apply(self, key: RecordKey, change: Change, *, now: float) -> Steps[ApplyResult]:
        gen = self.gen(key) + 1
        if self._forwards:
            tagged = _writes_of(change, {GEN_FIELD: _encode_gen(gen)})
            result: ApplyResult = yield BASE.apply(key, tagged, now=now)
            rec = self._records.get(key)
            if result.status is ApplyStatus.OK and rec is not None:
                # The checks passed in the store; the mirror only writes.
                _, outcome = apply_step(rec, _writes_of(change), now=now)
                if isinstance(outcome, StoredRecord):
                    outcome.version = result.version or outcome.version
                    self._keep(key, outcome, gen, changed=True)
            return result
        result, outcome = apply_step(self._records.get(key), change, now=now)
        if isinstance(outcome, StoredRecord):
            self._keep(key, outcome, gen, changed=True)
        return result

    def invalidate(
        self, key: RecordKey, *, now: float, lease_token: str | None = None
    ) -> Steps[bool]:
        rec = self._records.get(key)
        ended = False
        if self._inner:
            try:
                ended = yield BASE.invalidate(key, now=now, lease_token=lease_token)
                if not ended and self._local and rec is not None and not rec.invalidated:
                    # Served from the replica and the store came back without
                    # the session: leave a tombstone there, so no copy of the
                    # replica can bring it back.
                    yield BASE.create(key, _tombstone_seed(rec), now=now)
                    ended = yield BASE.invalidate(key, now=now)
            except StoreUnavailable:
                # A logout must reach the store, or fail loudly (503). The old
                # id of a rotation (a new id was created in this request) may
                # stay behind: it holds nothing the new id does not.
                if not (self._local and self._created):
                    raise
        if rec is not None:
            ok, tomb = invalidate_step(rec, now=now, lease_token=None)
            if isinstance(tomb, StoredRecord):
                self._keep(key, tomb, self.gen(key), changed=True)
            ended = ended or ok
        return ended

    def unlock(self, key: RecordKey, token: str) -> Steps[None]:
        if self._forwards:
            yield BASE.unlock(key, token)
            return
        outcome = unlock_step(self._records.get(key), token)
        if isinstance(outcome, StoredRecord):
            self._records[key] = outcome

    def renew(self, key: RecordKey, token: str, *, now: float, lease: float) -> Steps[bool]:
        if self._forwards:
            renewed: bool = yield BASE.renew(key, token, now=now, lease=lease)
            return renewed
        ok, outcome = renew_step(self._records.get(key), token, now=now, lease=lease)
        if isinstance(outcome, StoredRecord):
            self._records[key] = outcome
        return ok

    def wait_unlocked(self, key: RecordKey, timeout: float) -> Steps[None]:
        if self._forwards:
            yield BASE.wait_unlocked(key, timeout)
