"""The index of sessions by principal (user id), kept in the store as ordinary records.

``session.principal = user_id`` at login puts the session's id hash into an
index record of that user; ``SessionManager.sessions_of`` and
``invalidate_all`` read it. The index is made of the store contract's own
primitives (``create``, ``apply`` of a merge ``Change``, ``load``), so every
store has it without a line of store code, the contract suite covers it on
each of them, and nothing depends on Redis keyspace notifications (lost on
Cluster and on restart). Rejected: a ``principal`` column or a Redis set per
store, eight implementations of one idea, and what Spring Session does (a set
cleaned by expiry notifications, which grows when one is missed).

Layout. The index of principal ``P`` in application ``A`` lives under app id
``A#principals`` (``#`` cannot clash: it is not a separator of any store key,
and ``records(A)`` never lists it). One record per *window* of
``absolute_timeout`` seconds, by the session's creation time: a session
created at ``c`` is in window ``b = floor(c / W)``, record id
``sha256(P).W.b``. Its fields are ``id_hash -> created``. Every session of
window ``b`` ends by ``(b + 1) * W``, so the record is given a fixed expiry
of ``(b + 2) * W``: it never expires while one of its sessions can live (an
add never meets an expired index record, so no delete-and-recreate race can
drop an entry), and the store's ``purge`` removes it afterwards like any
record. A reader needs only the current window and the one before.

Bounds. An add is one merge ``apply`` (concurrent logins of one user each
keep their entry: different keys). When a user's index holds more entries
than ``prune_above`` or ``max_sessions``, the add checks each entry's session
(``load``, no touch) and removes the dead ones; ``sessions_of`` does the same
on every call. The index therefore holds at most the user's live sessions
plus ``prune_above`` dead ones, and at most ``limit`` live ones: past that,
the oldest sessions end (``max_sessions_per_principal``, default 1000).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._steps import BASE, Steps
from .codec import Codec, decode_field, encode_field
from .session import PRINCIPAL_KEY, RESERVED_PREFIX
from .stores.base import (
    ApplyResult,
    ApplyStatus,
    Change,
    LoadResult,
    LoadStatus,
    NewRecord,
    Record,
    RecordInfo,
    RecordKey,
    Store,
)

__all__ = [
    "INDEX_SUFFIX", "PrincipalIndex", "drop_entries", "index_app_id", "indexed_sessions",
    "is_index_app", "principal_in",
]  # fmt: skip

INDEX_SUFFIX = "#principals"
PRUNE_ABOVE = 16  # entries of one user before an add checks which are dead


def index_app_id(app_id: str) -> str:
    """The app id under which ``app_id``'s principal index records live."""
    return app_id + INDEX_SUFFIX


def is_index_app(app_id: str) -> bool:
    """True for an app id of index records (admin tools leave them out of counts)."""
    return app_id.endswith(INDEX_SUFFIX)


def principal_in(codec: Codec, fields: Mapping[str, bytes] | None) -> str | None:
    """The principal stored in a session's encoded ``fields``, or None.

    For the events of a session that is no longer readable as a ``Session``:
    emptied by ``invalidate()``, or deleted by purge. A damaged field: None.
    """
    data = None if fields is None else fields.get(PRINCIPAL_KEY)
    if data is None:
        return None
    try:
        value = decode_field(codec, data)[0]
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def principal_hash(principal: str) -> str:
    """The at-rest name of a principal: no user id in clear in store keys."""
    return hashlib.sha256(b"shoal.principal\x00" + principal.encode("utf-8")).hexdigest()


def _info(key: RecordKey, rec: Record) -> RecordInfo:
    return RecordInfo(
        key=key,
        version=rec.version,
        created=rec.created,
        accessed=rec.accessed,
        expires=rec.expires,
        invalidated=False,
        size=sum(len(v) for v in rec.fields.values()),
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    index: RecordKey  # the index record holding it
    session: RecordKey
    created: float


class PrincipalIndex:
    """Sessions by principal for one application on one store."""

    def __init__(
        self,
        *,
        app_id: str,
        window: float,
        codec: Codec,
        limit: int,
        prune_above: int = PRUNE_ABOVE,
    ) -> None:
        self.app_id = app_id
        self.window = window
        self.codec = codec
        self.limit = limit
        self.prune_above = prune_above

    # -- where --------------------------------------------------------------

    def _window_of(self, t: float) -> int:
        return math.floor(t / self.window)

    def _key(self, principal: str, window: int) -> RecordKey:
        return RecordKey(
            index_app_id(self.app_id),
            f"{principal_hash(principal)}.{self.window:g}.{window}",
        )

    def _end_of(self, window: int) -> float:
        return (window + 2) * self.window

    # -- writing ------------------------------------------------------------

    def add(
        self,
        principal: str,
        session: RecordKey,
        *,
        created: float,
        now: float,
        replaces: RecordKey | None = None,
    ) -> Steps[list[RecordKey]]:
        """Index ``session`` under ``principal`` (dropping ``replaces``, its old id).

        Returns the sessions that must end because the user now has more than
        ``limit``: the oldest first, never ``session`` itself. The caller ends
        them through the manager's one invalidation path and then calls
        ``remove``.
        """
        window = self._window_of(created)
        key = self._key(principal, window)
        value = encode_field(self.codec, session.id_hash, created, None)
        drop = (replaces.id_hash,) if replaces is not None else ()
        yield from self._write(key, window, {session.id_hash: value}, drop, now=now)
        entries = yield from self._entries(principal, now=now)
        if len(entries) <= min(self.limit, self.prune_above):
            return []
        live = yield from self._prune(entries, now=now)
        excess = len(live) - self.limit
        if excess <= 0:
            return []
        others = [e.session for e in live if e.session != session]
        return others[:excess]

    def remove(
        self, principal: str, sessions: Iterable[RecordKey], *, now: float
    ) -> Steps[None]:
        """Drop ``sessions`` from ``principal``'s index (ended, or never live)."""
        doomed = {s.id_hash for s in sessions}
        by_record: dict[RecordKey, list[str]] = {}
        for entry in (yield from self._entries(principal, now=now)):
            if entry.session.id_hash in doomed:
                by_record.setdefault(entry.index, []).append(entry.session.id_hash)
        yield from self._delete_all(by_record, now=now)

    def _write(
        self,
        key: RecordKey,
        window: int,
        fields: dict[str, bytes],
        drop: tuple[str, ...],
        *,
        now: float,
    ) -> Steps[None]:
        end = self._end_of(window)
        # idle_timeout so that expires stays at the record's fixed end.
        change = Change(idle_timeout=max(end - now, 1.0), set=fields, delete=drop)
        for _ in range(3):  # create loses only to a concurrent create: then apply wins
            applied: ApplyResult = yield BASE.apply(key, change, now=now)
            if applied.status is ApplyStatus.OK:
                return
            record = NewRecord(created=now, expires=end, absolute_expires=end, fields=fields)
            if (yield BASE.create(key, record, now=now)):
                return
        raise AssertionError(f"index record {key.id_hash[:12]} neither applied nor created")

    def _delete_all(self, by_record: dict[RecordKey, list[str]], *, now: float) -> Steps[None]:
        """Drop the listed entries from each index record."""
        for key, hashes in by_record.items():
            end = self._end_of(int(key.id_hash.rsplit(".", 1)[1]))
            # GONE: the index record itself ended; nothing is left to drop.
            change = Change(idle_timeout=max(end - now, 1.0), delete=hashes)
            yield BASE.apply(key, change, now=now)

    # -- reading ------------------------------------------------------------

    def _entries(self, principal: str, *, now: float) -> Steps[list[_Entry]]:
        """Every entry of the windows a live session can be in, oldest first."""
        current = self._window_of(now)
        entries: list[_Entry] = []
        for window in (current - 1, current):
            key = self._key(principal, window)
            loaded: LoadResult = yield BASE.load(key, now=now)
            record = loaded.record
            if record is None:
                continue
            for id_hash, data in record.fields.items():
                if id_hash.startswith(RESERVED_PREFIX):
                    continue  # shoal's own mark (``shoal copy``), not an entry
                try:
                    created = float(decode_field(self.codec, data)[0])
                except Exception:  # noqa: BLE001 - unreadable: sorts first, checked like any
                    created = 0.0
                entries.append(_Entry(key, RecordKey(self.app_id, id_hash), created))
        entries.sort(key=lambda e: (e.created, e.session.id_hash))
        return entries

    def _live(
        self, entries: list[_Entry], *, now: float
    ) -> Steps[list[tuple[_Entry, RecordInfo]]]:
        """The entries whose session is live, with its info; the others leave the index."""
        live: list[tuple[_Entry, RecordInfo]] = []
        dead: dict[RecordKey, list[str]] = {}
        for entry in entries:
            result: LoadResult = yield BASE.load(entry.session, now=now)
            if result.status is LoadStatus.LOADED and result.record is not None:
                live.append((entry, _info(entry.session, result.record)))
            else:
                dead.setdefault(entry.index, []).append(entry.session.id_hash)
        yield from self._delete_all(dead, now=now)
        return live

    def _prune(self, entries: list[_Entry], *, now: float) -> Steps[list[_Entry]]:
        """The entries whose session is live; the others are removed from the index."""
        return [entry for entry, _ in (yield from self._live(entries, now=now))]

    def sessions(self, principal: str, *, now: float) -> Steps[list[RecordInfo]]:
        """The live sessions of ``principal``, oldest first; dead entries are dropped."""
        entries = yield from self._entries(principal, now=now)
        return [info for _, info in (yield from self._live(entries, now=now))]


def indexed_sessions(
    store: Store, principal: str, *, app_id: str | None, now: float, codec: Codec
) -> list[tuple[RecordKey, RecordInfo]]:
    """``(index record, session)`` of every live session of ``principal``, found by a scan.

    For admin tools, which know neither the application's ``absolute_timeout``
    (the window width in the index record's name) nor, without ``--app-id``,
    the application: every index record of ``principal`` is found by its name
    prefix. Writes nothing.
    """
    prefix = principal_hash(principal) + "."
    found: list[tuple[RecordKey, RecordInfo]] = []
    apps = [index_app_id(app_id)] if app_id is not None else None
    index_keys = [
        info.key
        for info in store.records(apps[0] if apps else None)
        if is_index_app(info.key.app_id) and info.key.id_hash.startswith(prefix)
        and not info.invalidated and info.expires > now
    ]
    for index in index_keys:
        record = store.load(index, now=now).record
        if record is None:
            continue
        owner = index.app_id[: -len(INDEX_SUFFIX)]
        for id_hash in sorted(f for f in record.fields if not f.startswith(RESERVED_PREFIX)):
            key = RecordKey(owner, id_hash)
            result = store.load(key, now=now)
            if result.status is LoadStatus.LOADED and result.record is not None:
                found.append((index, _info(key, result.record)))
    found.sort(key=lambda pair: (pair[1].created, pair[1].key.id_hash))
    return found


def drop_entries(store: Store, index: RecordKey, id_hashes: list[str], *, now: float) -> None:
    """Remove ``id_hashes`` from one index record (admin ``kill``)."""
    record = store.load(index, now=now).record
    if record is None:
        return
    store.apply(index, Change(idle_timeout=max(record.expires - now, 1.0), delete=id_hashes),
                now=now)  # fmt: skip
