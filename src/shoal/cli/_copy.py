"""``shoal copy``: move every session from one store to another while the app serves.

Only the store contract is used (``records``, ``load``, ``create``, ``apply``,
``invalidate``), so any store copies to any other (SQLite to Redis when an
app outgrows one host). The copy runs in *passes*: each lists the source and
copies every record whose source version is newer than what the target last
received from it, then the next pass does the same, until a pass that began
after ``keep_going()`` turned false copies nothing. A session changed while
a pass runs is therefore copied again by the next one, and the copy ends
with its newest version.

Version compare on the target: the contract has no "write this version"
primitive (and should not: versions fence live writers), so each copied
record carries, in the reserved field ``_shoal.copied`` (hidden from the
session's mapping), the source version it came from and the target version
the copy's write gave it. A target record whose version moved past that was
written by the application on the target (after the switch) and always
wins; else it is replaced when the source's version is newer. Rejected: a
"put this version" store primitive, eight implementations for one tool. Writes go
through ``apply`` with ``expect_version`` (compare-and-set), so a write of
the application on the target that lands during the copy is never
overwritten blindly: the copy re-reads and decides again.

Tombstones are copied too (a session logged out on the source must not be
usable on the target, nor restored there from a replica); expired records
are not. Leases are not: a lease belongs to a request on the source.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..codec import JsonCodec, decode_field, encode_field
from ..principals import INDEX_SUFFIX
from ..session import RESERVED_PREFIX
from ..stores.base import (
    ApplyStatus,
    Change,
    LoadStatus,
    NewRecord,
    Record,
    RecordInfo,
    RecordKey,
    Store,
)

__all__ = ["COPY_MARK", "CopyReport", "copy_records", "copy_one"]

COPY_MARK = RESERVED_PREFIX + "copied"
ATTEMPTS = 8  # compare-and-set retries of one record against a busy target
_CODEC = JsonCodec()


@dataclass(slots=True)
class CopyReport:
    """What a copy did, summed over its passes."""

    passes: int = 0
    copied: int = 0  # live sessions written to the target
    index: int = 0  # records of the user index (``APP#principals``) written to it
    ended: int = 0  # tombstones written to the target
    unchanged: int = 0  # the target already had this version (later passes: not even read)
    target_newer: int = 0  # written on the target by the application: kept
    skipped: int = 0  # expired, or gone from the source meanwhile
    busy: int = 0  # the target kept changing under the compare-and-set: next pass
    settled: bool = False  # the last pass found nothing to copy


def _copied_version(record: Record) -> int | None:
    """The source version this target record holds, if the application has not
    written it since the copy; None when the application has (it wins)."""
    data = record.fields.get(COPY_MARK)
    if data is None:
        return None
    try:
        value = decode_field(_CODEC, data)[0]
    except Exception:  # noqa: BLE001 - not ours: treat as written by the application
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )):  # fmt: skip
        return None
    source_version, target_version = value
    return source_version if target_version == record.version else None


def _with_mark(record: Record, target_version: int) -> dict[str, bytes]:
    """The source's fields and the mark [source version, target version after the write]."""
    fields = dict(record.fields)
    mark = [record.version, target_version]
    fields[COPY_MARK] = encode_field(_CODEC, COPY_MARK, mark, None)
    return fields


def copy_one(source: Store, target: Store, info: RecordInfo, *, now: float) -> str:
    """Copy one record; what happened, as a ``CopyReport`` field name."""
    key = info.key
    if info.invalidated:
        return _copy_tombstone(target, info, now=now)
    loaded = source.load(key, now=now)  # no touch: copying is not activity
    if loaded.status is LoadStatus.INVALIDATED:
        return _copy_tombstone(target, info, now=now)
    if loaded.record is None:
        return "skipped"
    record = loaded.record
    for _ in range(ATTEMPTS):
        there = target.load(key, now=now)
        if there.status is LoadStatus.INVALIDATED:
            return "target_newer"  # ended on the target: never brought back
        if there.record is None:
            new = NewRecord(
                created=record.created,
                expires=record.expires,
                absolute_expires=record.absolute_expires,
                fields=_with_mark(record, 1),  # a created record has version 1
            )
            if target.create(key, new, now=now):
                return "copied"
            if there.status is LoadStatus.EXPIRED:
                return "skipped"  # an expired copy awaits the target's purge
            continue  # created meanwhile: decide again
        mark = _copied_version(there.record)
        if mark is None:
            return "target_newer"  # the application wrote it on the target: it wins
        if mark >= record.version and there.record.expires >= record.expires:
            return "unchanged"
        # Newer data, or only a later expiry (a touch moves no version): the
        # whole record again, expiry included.
        change = Change(
            idle_timeout=max(record.expires - now, 0.001),
            set=_with_mark(record, there.record.version + 1),  # an apply bumps it by one
            replace=True,
            expect_version=there.record.version,
        )
        if target.apply(key, change, now=now).status is ApplyStatus.OK:
            return "copied"
    return "busy"


def _copy_tombstone(target: Store, info: RecordInfo, *, now: float) -> str:
    there = target.load(info.key, now=now)
    if there.status is LoadStatus.INVALIDATED:
        return "unchanged"
    if there.status in (LoadStatus.ABSENT, LoadStatus.EXPIRED):
        # Created empty and ended at once: a tombstone until the source's says.
        empty = NewRecord(created=info.created, expires=info.expires,
                          absolute_expires=info.expires)  # fmt: skip
        target.create(info.key, empty, now=now)
    return "ended" if target.invalidate(info.key, now=now) else "skipped"


def _is_index(key: RecordKey) -> bool:
    """A record of the user index (``shoal.principals``), not a session."""
    return key.app_id.endswith(INDEX_SUFFIX)


def copy_records(
    source: Store,
    target: Store,
    *,
    app_id: str | None = None,
    keep_going: Callable[[], bool] = lambda: False,
    max_passes: int = 10,
    clock: Callable[[], float] = time.time,
    on_pass: Callable[[int, int], None] | None = None,
    on_record: Callable[[], None] | None = None,
) -> CopyReport:
    """Copy every live session and tombstone of ``app_id`` (or all) until quiet.

    Stops after a pass that began when ``keep_going()`` was false and copied
    nothing, or after ``max_passes`` (the report then shows the last pass's
    copies: run again). ``on_pass(number, records)`` and ``on_record()``
    drive a progress bar.
    """
    report = CopyReport()
    sent: dict[RecordKey, tuple[int, float]] = {}  # (version, expires) the target has
    for number in range(1, max_passes + 1):
        settled = not keep_going()
        now = clock()
        infos = [
            info for info in source.records(app_id)
            if info.invalidated or info.expires > now
        ]  # fmt: skip
        if on_pass is not None:
            on_pass(number, len(infos))
        moved = 0
        for info in infos:
            version, expires = sent.get(info.key, (-1, 0.0))
            if version >= info.version and expires >= info.expires:
                report.unchanged += 1
            else:
                outcome = copy_one(source, target, info, now=now)
                # The user index is copied as records are, but it is not a session.
                field = "index" if outcome == "copied" and _is_index(info.key) else outcome
                setattr(report, field, getattr(report, field) + 1)
                if outcome in ("copied", "ended"):
                    moved += 1
                if outcome in ("copied", "ended", "unchanged", "target_newer"):
                    sent[info.key] = (info.version, info.expires)
                if outcome == "busy":
                    moved += 1  # not settled yet
            if on_record is not None:
                on_record()
        report.passes = number
        if settled and moved == 0:
            report.settled = True
            break
    return report
