"""The store contract as pure steps, shared by stores that run in-process.

memory, sqlite, file and dbm stores each take their own lock or transaction,
read one ``StoredRecord``, call a step below, and write back what it returns;
the replica (``shoal.replica``) runs the same steps on a session held by the
client alone, so this module is public within the package.
The rules of ``base.py`` are therefore written once for all of them; Redis
and PostgreSQL restate the same steps in Lua and SQL, and the one contract
suite holds all of them to the same behaviour.

Each step returns ``(result, new_state)`` where ``new_state`` is ``None`` when
nothing must be written, or ``DELETE`` when the record must go.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Final

from .base import (
    ApplyResult,
    ApplyStatus,
    Change,
    LoadResult,
    LoadStatus,
    LockRequest,
    NewRecord,
    Record,
    RecordInfo,
    RecordKey,
    Touch,
)

__all__ = [
    "DELETE",
    "StoredRecord",
    "apply_step",
    "create_step",
    "invalidate_step",
    "is_purgeable",
    "load_step",
    "pack_fields",
    "pack_record",
    "renew_step",
    "unlock_step",
    "unpack_fields",
    "unpack_record",
]


@dataclass(slots=True)
class StoredRecord:
    """Everything a store keeps for one session, tombstones and leases included."""

    version: int
    created: float
    accessed: float
    expires: float
    absolute_expires: float
    fields: dict[str, bytes] = field(default_factory=dict)
    field_versions: dict[str, int] = field(default_factory=dict)
    invalidated: bool = False
    lease_token: str | None = None
    lease_until: float = 0.0

    def lease_held_by_other(self, token: str | None, now: float) -> bool:
        return (
            self.lease_token is not None
            and self.lease_token != token
            and self.lease_until > now
        )

    def holds_lease(self, token: str, now: float) -> bool:
        return self.lease_token == token and self.lease_until > now

    def to_record(self) -> Record:
        return Record(  # positional: a load's path
            self.version,
            self.created,
            self.accessed,
            self.expires,
            self.absolute_expires,
            dict(self.fields),
            dict(self.field_versions),
        )

    def info(self, key: RecordKey) -> RecordInfo:
        return RecordInfo(
            key=key,
            version=self.version,
            created=self.created,
            accessed=self.accessed,
            expires=self.expires,
            invalidated=self.invalidated,
            size=sum(len(v) for v in self.fields.values()),
            locked_until=self.lease_until if self.lease_token is not None else None,
        )


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE: Final = _Delete()

Outcome = StoredRecord | None


def _copy(
    rec: StoredRecord, fields: dict[str, bytes], field_versions: dict[str, int]
) -> StoredRecord:
    """``dataclasses.replace(rec, fields=..., field_versions=...)`` without its
    per-call introspection, which costs more than the rest of a step."""
    return StoredRecord(
        rec.version,
        rec.created,
        rec.accessed,
        rec.expires,
        rec.absolute_expires,
        fields,
        field_versions,
        rec.invalidated,
        rec.lease_token,
        rec.lease_until,
    )


# The members each step returns, read once: on Python 3.11 every
# ``LoadStatus.LOADED`` goes through EnumType.__getattr__'s hook (measured:
# ~1k instructions a lookup, a global ~0.1k), several times a request.
_LOADED = LoadStatus.LOADED
_ABSENT = LoadStatus.ABSENT
_INVALIDATED = LoadStatus.INVALIDATED
_EXPIRED = LoadStatus.EXPIRED
_APPLIED = ApplyStatus.OK


def _live_status(rec: StoredRecord | None, now: float) -> LoadStatus:
    if rec is None:
        return _ABSENT
    if rec.invalidated:
        return _INVALIDATED
    if rec.expires <= now:
        return _EXPIRED
    return _LOADED


def _touched(rec: StoredRecord, now: float, idle_timeout: float) -> None:
    rec.accessed = now
    rec.expires = min(now + idle_timeout, rec.absolute_expires)


def load_step(
    rec: StoredRecord | None, *, now: float, touch: Touch | None, lock: LockRequest | None
) -> tuple[LoadResult, Outcome]:
    """Read a live record; touch it when due and take the lease when asked."""
    status = _live_status(rec, now)
    if status is not _LOADED or rec is None:
        return LoadResult(status), None
    if lock is not None and rec.lease_held_by_other(lock.token, now):
        return LoadResult(LoadStatus.LOCKED, locked_until=rec.lease_until), None
    new: StoredRecord | None = None
    if touch is not None and rec.accessed < touch.if_accessed_before:
        new = _copy(rec, rec.fields, rec.field_versions)
        _touched(new, now, touch.idle_timeout)
    if lock is not None:
        new = new or _copy(rec, rec.fields, rec.field_versions)
        new.lease_token, new.lease_until = lock.token, now + lock.lease
    return LoadResult(_LOADED, (new or rec).to_record()), new


def create_step(
    rec: StoredRecord | None, new: NewRecord, *, now: float, lock: LockRequest | None
) -> tuple[bool, Outcome]:
    """Create-if-absent: any existing record, even a tombstone, wins."""
    if rec is not None:
        return False, None
    created = StoredRecord(
        version=1,
        created=new.created,
        accessed=now,
        expires=new.expires,
        absolute_expires=new.absolute_expires,
        fields=dict(new.fields),
        field_versions={k: 1 for k in new.fields},
    )
    if lock is not None:
        created.lease_token, created.lease_until = lock.token, now + lock.lease
    return True, created


def apply_step(
    rec: StoredRecord | None, change: Change, *, now: float
) -> tuple[ApplyResult, Outcome]:
    """Check every condition of ``change``, then write it, or write nothing."""
    if _live_status(rec, now) is not _LOADED or rec is None:
        return ApplyResult(ApplyStatus.GONE), None
    if change.lease_token is not None and not rec.holds_lease(change.lease_token, now):
        return ApplyResult(ApplyStatus.LOCK_LOST), None
    if change.expect_version is not None and rec.version != change.expect_version:
        status = ApplyStatus.LOCK_LOST if change.lease_token else ApplyStatus.CONFLICT
        return ApplyResult(status), None
    if change.expect_fields:
        conflicts = tuple(
            sorted(
                key
                for key, seen in change.expect_fields.items()
                if rec.field_versions.get(key) != seen
            )
        )
        if conflicts:
            return ApplyResult(ApplyStatus.CONFLICT, conflicts=conflicts), None
    new = _copy(rec, dict(rec.fields), dict(rec.field_versions))
    new.version += 1
    if change.replace:
        new.fields, new.field_versions = {}, {}
    for key in change.delete:
        new.fields.pop(key, None)
        new.field_versions.pop(key, None)
    for key, value in change.set.items():
        new.fields[key] = value
        unchanged = change.replace and rec.fields.get(key) == value
        # A whole-record write keeps the versions of keys it did not change.
        new.field_versions[key] = rec.field_versions[key] if unchanged else new.version
    _touched(new, now, change.idle_timeout)
    if change.release:
        new.lease_token, new.lease_until = None, 0.0
    return ApplyResult(_APPLIED, version=new.version), new


def invalidate_step(
    rec: StoredRecord | None, *, now: float, lease_token: str | None
) -> tuple[bool, Outcome]:
    """Turn a live record into a tombstone that lasts until its absolute expiry."""
    if _live_status(rec, now) is not _LOADED or rec is None:
        return False, None
    if lease_token is not None and not rec.holds_lease(lease_token, now):
        return False, None
    tomb = StoredRecord(
        version=rec.version + 1,
        created=rec.created,
        accessed=now,
        expires=rec.absolute_expires,
        absolute_expires=rec.absolute_expires,
        invalidated=True,
    )
    return True, tomb


def unlock_step(rec: StoredRecord | None, token: str) -> Outcome:
    if rec is None or rec.lease_token != token:
        return None
    new = _copy(rec, rec.fields, rec.field_versions)
    new.lease_token, new.lease_until = None, 0.0
    return new


def renew_step(
    rec: StoredRecord | None, token: str, *, now: float, lease: float
) -> tuple[bool, Outcome]:
    if rec is None or rec.invalidated or not rec.holds_lease(token, now):
        return False, None
    new = _copy(rec, rec.fields, rec.field_versions)
    new.lease_until = now + lease
    return True, new


def is_purgeable(rec: StoredRecord, *, now: float, grace: float) -> bool:
    """Expired for longer than ``grace``: no request can still be saving it."""
    return rec.expires + grace <= now


# Field map <-> bytes, for stores that keep one blob per record.
# Layout: count, then per field: key length, key, version, value length, value.
_COUNT = struct.Struct(">I")
_ENTRY = struct.Struct(">IQI")


def pack_fields(fields: dict[str, bytes], versions: dict[str, int]) -> bytes:
    parts = [_COUNT.pack(len(fields))]
    for key, value in fields.items():
        raw = key.encode("utf-8")
        parts.append(_ENTRY.pack(len(raw), versions.get(key, 0), len(value)))
        parts.append(raw)
        parts.append(value)
    return b"".join(parts)


def unpack_fields(blob: bytes) -> tuple[dict[str, bytes], dict[str, int]]:
    (count,) = _COUNT.unpack_from(blob, 0)
    pos = _COUNT.size
    fields: dict[str, bytes] = {}
    versions: dict[str, int] = {}
    for _ in range(count):
        klen, version, vlen = _ENTRY.unpack_from(blob, pos)
        pos += _ENTRY.size
        key = blob[pos : pos + klen].decode("utf-8")
        pos += klen
        fields[key] = blob[pos : pos + vlen]
        versions[key] = version
        pos += vlen
    return fields, versions


# A whole StoredRecord <-> bytes, for stores that keep one blob per session
# (file, dbm). Layout: format byte, version, created, accessed, expires,
# absolute expiry, tombstone flag, lease end, lease token length, lease token
# (UTF-8), the ``pack_fields`` blob, then a CRC-32 of everything before it, so
# a torn or damaged blob is refused instead of being read as a session.
_RECORD_FORMAT = 1
_HEAD = struct.Struct(">BQddddBdH")
_CRC = struct.Struct(">I")


def pack_record(rec: StoredRecord) -> bytes:
    token = (rec.lease_token or "").encode("utf-8")
    has_token = rec.lease_token is not None
    head = _HEAD.pack(
        _RECORD_FORMAT,
        rec.version,
        rec.created,
        rec.accessed,
        rec.expires,
        rec.absolute_expires,
        int(rec.invalidated) | (2 if has_token else 0),
        rec.lease_until,
        len(token),
    )
    body = b"".join((head, token, pack_fields(rec.fields, rec.field_versions)))
    return body + _CRC.pack(zlib.crc32(body))


def unpack_record(blob: bytes) -> StoredRecord:
    """The record packed by ``pack_record``; ``ValueError`` when damaged."""
    if len(blob) < _HEAD.size + _COUNT.size + _CRC.size:
        raise ValueError("record blob too short")
    body, (crc,) = blob[: -_CRC.size], _CRC.unpack_from(blob, len(blob) - _CRC.size)
    if zlib.crc32(body) != crc:
        raise ValueError("record blob checksum mismatch")
    fmt, version, created, accessed, expires, absolute, flags, until, tlen = _HEAD.unpack_from(
        body, 0
    )
    if fmt != _RECORD_FORMAT:
        raise ValueError(f"unknown record format {fmt}")
    pos = _HEAD.size
    token = body[pos : pos + tlen].decode("utf-8") if flags & 2 else None
    try:
        fields, versions = unpack_fields(body[pos + tlen :])
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"record fields unreadable: {exc}") from exc
    return StoredRecord(
        version=version,
        created=created,
        accessed=accessed,
        expires=expires,
        absolute_expires=absolute,
        fields=fields,
        field_versions=versions,
        invalidated=bool(flags & 1),
        lease_token=token,
        lease_until=until,
    )
