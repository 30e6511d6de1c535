"""The store contract (stores/base.py), run against every store kind.

Each test names the rule it holds the store to. Time is passed explicitly,
so nothing here sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.stores.base import (
    ApplyStatus,
    Change,
    LoadStatus,
    LockRequest,
    NewRecord,
    RecordKey,
    Store,
    Touch,
)
from tests.conftest import ASYNC_STORE_KINDS, STORE_KINDS, open_kind

# Near the real time: stores with native expiry (Redis TTLs) see the same
# clock, so records the test keeps alive are not expired by the server.
T0 = float(int(time.time()))
IDLE = 100.0


@pytest.fixture(params=sorted([*STORE_KINDS, *ASYNC_STORE_KINDS]))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every store kind, sync and async: the async ones through a sync facade."""
    opened = open_kind(request.param, request, tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def key(app_id: str) -> RecordKey:
    return RecordKey(app_id, "a" * 64)


def new(fields: dict[str, bytes] | None = None, *, now: float = T0) -> NewRecord:
    return NewRecord(
        created=now, expires=now + IDLE, absolute_expires=now + 10 * IDLE, fields=fields or {}
    )


def test_absent_record_loads_as_absent(store: Store, key: RecordKey) -> None:
    assert store.load(key, now=T0).status is LoadStatus.ABSENT


def test_created_record_loads_with_version_one(store: Store, key: RecordKey) -> None:
    assert store.create(key, new({"a": b"1", "b": b"2"}), now=T0)
    result = store.load(key, now=T0 + 1)
    assert result.status is LoadStatus.LOADED and result.record is not None
    assert result.record.version == 1
    assert dict(result.record.fields) == {"a": b"1", "b": b"2"}
    assert dict(result.record.field_versions) == {"a": 1, "b": 1}
    assert result.record.expires == T0 + IDLE


def test_create_never_overwrites(store: Store, key: RecordKey) -> None:
    assert store.create(key, new({"a": b"1"}), now=T0)
    assert not store.create(key, new({"a": b"2"}), now=T0)
    record = store.load(key, now=T0).record
    assert record is not None and record.fields["a"] == b"1"


def test_expired_record_is_never_loaded(store: Store, key: RecordKey) -> None:
    store.create(key, new({"a": b"1"}), now=T0)
    assert store.load(key, now=T0 + IDLE).status is LoadStatus.EXPIRED


def test_touch_extends_only_when_due(store: Store, key: RecordKey) -> None:
    store.create(key, new(), now=T0)
    not_due = store.load(key, now=T0 + 10, touch=Touch(T0 + 10 - 60, IDLE)).record
    assert not_due is not None and not_due.expires == T0 + IDLE
    due = store.load(key, now=T0 + 70, touch=Touch(T0 + 70 - 60, IDLE)).record
    assert due is not None and due.expires == T0 + 70 + IDLE and due.accessed == T0 + 70
    stored = store.load(key, now=T0 + 71).record
    assert stored is not None and stored.expires == T0 + 70 + IDLE
    assert stored.version == 1, "a touch is not a write"


def test_touch_is_capped_by_absolute_expiry(store: Store, key: RecordKey) -> None:
    store.create(key, new(), now=T0)
    now = T0
    for _ in range(12):
        now += IDLE - 1
        result = store.load(key, now=now, touch=Touch(now - 1, IDLE))
        if result.status is not LoadStatus.LOADED:
            break
    assert result.status is LoadStatus.EXPIRED
    assert now >= T0 + 10 * IDLE


def test_merge_keeps_other_keys_and_versions_them(store: Store, key: RecordKey) -> None:
    store.create(key, new({"a": b"1", "b": b"2"}), now=T0)
    first = store.apply(key, Change(IDLE, set={"a": b"10"}), now=T0 + 1)
    second = store.apply(key, Change(IDLE, set={"c": b"3"}, delete=["b"]), now=T0 + 2)
    assert (first.status, first.version) == (ApplyStatus.OK, 2)
    assert (second.status, second.version) == (ApplyStatus.OK, 3)
    record = store.load(key, now=T0 + 3).record
    assert record is not None
    assert dict(record.fields) == {"a": b"10", "c": b"3"}
    assert dict(record.field_versions) == {"a": 2, "c": 3}
    assert record.expires == T0 + 2 + IDLE, "a save resets idle expiry"


def test_replace_drops_keys_not_written(store: Store, key: RecordKey) -> None:
    store.create(key, new({"a": b"1", "b": b"2"}), now=T0)
    store.apply(key, Change(IDLE, set={"a": b"1", "c": b"3"}, replace=True), now=T0 + 1)
    record = store.load(key, now=T0 + 1).record
    assert record is not None
    assert dict(record.fields) == {"a": b"1", "c": b"3"}
    assert record.field_versions["a"] == 1, "an unchanged key keeps its version"


@pytest.mark.parametrize("ending", ["absent", "expired", "invalidated"])
def test_apply_never_recreates_a_session(store: Store, key: RecordKey, ending: str) -> None:
    if ending != "absent":
        store.create(key, new({"a": b"1"}), now=T0)
    now = T0 + 1
    if ending == "expired":
        now = T0 + IDLE + 1
    if ending == "invalidated":
        assert store.invalidate(key, now=now)
    result = store.apply(key, Change(IDLE, set={"a": b"2"}), now=now)
    assert result.status is ApplyStatus.GONE
    assert store.load(key, now=now).status is not LoadStatus.LOADED


def test_compare_and_set_on_version(store: Store, key: RecordKey) -> None:
    store.create(key, new({"a": b"1"}), now=T0)
    store.apply(key, Change(IDLE, set={"a": b"2"}), now=T0)
    stale = store.apply(key, Change(IDLE, set={"a": b"3"}, expect_version=1), now=T0)
    fresh = store.apply(key, Change(IDLE, set={"a": b"4"}, expect_version=2), now=T0)
    assert stale.status is ApplyStatus.CONFLICT
    assert fresh.status is ApplyStatus.OK


def test_expect_fields_names_the_conflicting_keys(store: Store, key: RecordKey) -> None:
    store.create(key, new({"a": b"1", "b": b"1"}), now=T0)
    store.apply(key, Change(IDLE, set={"a": b"2", "new": b"x"}), now=T0)
    result = store.apply(
        key,
        Change(IDLE, set={"b": b"2"}, expect_fields={"a": 1, "b": 1, "new": None}),
        now=T0,
    )
    assert result.status is ApplyStatus.CONFLICT
    assert set(result.conflicts) == {"a", "new"}
    unrelated = store.apply(key, Change(IDLE, set={"b": b"2"}, expect_fields={"b": 1}), now=T0)
    assert unrelated.status is ApplyStatus.OK


def test_invalidate_leaves_a_tombstone(store: Store, key: RecordKey) -> None:
    store.create(key, new({"a": b"1"}), now=T0)
    assert store.invalidate(key, now=T0 + 1)
    assert not store.invalidate(key, now=T0 + 2)
    assert store.load(key, now=T0 + 2).status is LoadStatus.INVALIDATED
    assert not store.create(key, new({"a": b"evil"}), now=T0 + 2)
    infos = [info for info in store.records(key.app_id) if info.key == key]
    assert len(infos) == 1 and infos[0].invalidated and infos[0].size == 0


def test_lease_excludes_other_tokens_until_it_expires(store: Store, key: RecordKey) -> None:
    store.create(key, new({"a": b"1"}), now=T0)
    mine, theirs = LockRequest("node-a:1:x", 5.0), LockRequest("node-b:2:y", 5.0)
    assert store.load(key, now=T0, lock=mine).status is LoadStatus.LOADED
    blocked = store.load(key, now=T0 + 1, lock=theirs)
    assert blocked.status is LoadStatus.LOCKED and blocked.locked_until == T0 + 5.0
    assert store.load(key, now=T0 + 1).status is LoadStatus.LOADED, "readers never wait"
    assert store.load(key, now=T0 + 1, lock=mine).status is LoadStatus.LOADED, "re-entrant"
    assert store.load(key, now=T0 + 6.5, lock=theirs).status is LoadStatus.LOADED


def test_expired_lease_is_fenced(store: Store, key: RecordKey) -> None:
    store.create(key, new({"a": b"1"}), now=T0)
    store.load(key, now=T0, lock=LockRequest("late", 5.0))
    store.load(key, now=T0 + 6, lock=LockRequest("next", 5.0))
    late = store.apply(
        key, Change(IDLE, set={"a": b"late"}, lease_token="late", expect_version=1), now=T0 + 7
    )
    assert late.status is ApplyStatus.LOCK_LOST
    expired = store.apply(key, Change(IDLE, set={"a": b"x"}, lease_token="next"), now=T0 + 20)
    assert expired.status is ApplyStatus.LOCK_LOST, "even unclaimed, an expired lease is lost"
    record = store.load(key, now=T0 + 20).record
    assert record is not None and record.fields["a"] == b"1"


def test_release_and_unlock_free_the_lease(store: Store, key: RecordKey) -> None:
    store.create(key, new({"a": b"1"}), now=T0)
    store.load(key, now=T0, lock=LockRequest("one", 30.0))
    saved = store.apply(
        key, Change(IDLE, set={"a": b"2"}, lease_token="one", release=True), now=T0 + 1
    )
    assert saved.status is ApplyStatus.OK
    assert store.load(key, now=T0 + 1, lock=LockRequest("two", 30.0)).status is LoadStatus.LOADED
    store.unlock(key, "not-the-holder")
    assert store.load(key, now=T0 + 2, lock=LockRequest("three", 30.0)).status is LoadStatus.LOCKED
    store.unlock(key, "two")
    assert store.load(key, now=T0 + 2, lock=LockRequest("three", 30.0)).status is LoadStatus.LOADED


def test_renew_extends_only_a_held_lease(store: Store, key: RecordKey) -> None:
    store.create(key, new(), now=T0)
    store.load(key, now=T0, lock=LockRequest("one", 5.0))
    assert store.renew(key, "one", now=T0 + 4, lease=5.0)
    assert store.load(key, now=T0 + 8, lock=LockRequest("two", 5.0)).status is LoadStatus.LOCKED
    assert not store.renew(key, "two", now=T0 + 8, lease=5.0)
    assert not store.renew(key, "one", now=T0 + 20, lease=5.0)


def test_purge_respects_grace_and_limit(store: Store, app_id: str) -> None:
    keys = [RecordKey(app_id, f"{i:064x}") for i in range(5)]
    for i, k in enumerate(keys):
        store.create(k, new({"i": str(i).encode()}, now=T0 + i * 10), now=T0 + i * 10)
    grace = 50.0
    # Record i expires at T0 + 10 i + IDLE: at this time records 0..2 are past grace.
    now = T0 + IDLE + grace + 25
    assert store.purge(now=now, grace=grace, limit=2) == 2
    assert store.purge(now=now, grace=grace, limit=10) == 1
    assert store.purge(now=now, grace=grace, limit=10) == 0
    remaining = {info.key for info in store.records(app_id)}
    assert remaining == set(keys[3:])


def test_purge_keeps_a_session_saved_meanwhile(store: Store, key: RecordKey) -> None:
    store.create(key, new({"a": b"1"}), now=T0)
    # A request loaded it just before expiry and saves: the save extends it.
    assert store.apply(key, Change(IDLE, set={"a": b"2"}), now=T0 + IDLE - 1).status is ApplyStatus.OK
    assert store.purge(now=T0 + IDLE + 60, grace=50.0) == 0
    assert store.load(key, now=T0 + IDLE + 60).status is LoadStatus.LOADED


def test_tombstone_is_purged_after_absolute_expiry(store: Store, key: RecordKey) -> None:
    store.create(key, new(), now=T0)
    store.invalidate(key, now=T0 + 1)
    assert store.purge(now=T0 + IDLE + 100, grace=10) == 0, "the tombstone outlives idle expiry"
    assert store.purge(now=T0 + 10 * IDLE + 11, grace=10) == 1


def test_delete_removes_outright(store: Store, key: RecordKey) -> None:
    store.create(key, new(), now=T0)
    assert store.delete(key)
    assert not store.delete(key)
    assert store.load(key, now=T0).status is LoadStatus.ABSENT


def test_records_lists_one_namespace(store: Store, app_id: str) -> None:
    mine, other = RecordKey(app_id, "b" * 64), RecordKey(app_id + "x", "b" * 64)
    store.create(mine, new({"k": b"12345"}), now=T0)
    store.create(other, new(), now=T0)
    listed = list(store.records(app_id))
    assert [info.key for info in listed] == [mine]
    assert listed[0].size == 5 and listed[0].version == 1


def test_binary_and_unicode_fields_round_trip(store: Store, key: RecordKey) -> None:
    fields = {"ünï": bytes(range(256)), "": b"", "k" * 200: b"\x00" * 10_000}
    store.create(key, new(fields), now=T0)
    record = store.load(key, now=T0).record
    assert record is not None and dict(record.fields) == fields
