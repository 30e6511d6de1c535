"""The near cache: a hit costs no store call; a stale entry never loses a write or a logout."""

from __future__ import annotations

import pytest

from shoal import ConfigError, SessionManager
from shoal.cluster import NearCache
from shoal.stores.memory import MemoryStore
from shoal.stores.sqlite import SQLiteStore
from tests._counting import CountingStore


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _pair(**cache: object) -> tuple[SessionManager, SessionManager, CountingStore]:
    shared = MemoryStore()
    counted = CountingStore(shared)
    reader = SessionManager(
        counted, node_id="reader", events=True,
        near_cache=NearCache(**cache) if cache else 100,  # type: ignore[arg-type]
    )  # fmt: skip
    writer = SessionManager(shared, node_id="writer", events=True, near_cache=100)
    return reader, writer, counted


def test_a_read_only_open_served_from_the_cache_makes_no_store_call() -> None:
    reader, writer, counted = _pair()
    with writer.open() as session:
        session["cart"] = ["apple"]
    with reader.open(session.id, read_only=True) as first:
        assert first["cart"] == ["apple"]
    calls = len(counted.calls)
    for _ in range(5):
        with reader.open(session.id, read_only=True) as hit:
            assert hit["cart"] == ["apple"]
    assert len(counted.calls) == calls
    assert reader.near_cache is not None and reader.near_cache.stats.hits == 5


def test_a_write_on_another_node_drops_the_entry() -> None:
    reader, writer, counted = _pair()
    with writer.open() as session:
        session["n"] = 1
    with reader.open(session.id, read_only=True):
        pass
    with writer.open(session.id) as write:
        write["n"] = 2
    with reader.open(session.id, read_only=True) as fresh:
        assert fresh["n"] == 2


def test_a_logout_on_another_node_ends_the_session_at_once() -> None:
    reader, writer, _ = _pair()
    with writer.open() as session:
        session["user"] = "ann"
    with reader.open(session.id, read_only=True) as cached:
        assert cached["user"] == "ann"
    with writer.open(session.id) as logout:
        logout.invalidate()
    with reader.open(session.id, read_only=True) as after:
        assert after.is_new and "user" not in after


def test_a_stale_entry_never_loses_an_update_nor_resurrects_a_logout() -> None:
    # Events lost (the writer does not announce): the reader's entry is stale.
    shared = MemoryStore()
    reader = SessionManager(shared, node_id="reader", events=True, near_cache=100)
    writer = SessionManager(shared, node_id="writer")  # no events: nothing drops the entry
    with writer.open() as session:
        session["a"] = 1
    with reader.open(session.id, read_only=True):
        pass
    with writer.open(session.id) as write:
        write["a"] = 2
    with reader.open(session.id, read_only=True) as stale:
        assert stale["a"] == 1  # served stale (within max_age), as documented
    with reader.open(session.id) as writing:  # a write loads from the store
        assert writing["a"] == 2
        writing["b"] = 1
    with writer.open(session.id, read_only=True) as check:
        assert dict(check) == {"a": 2, "b": 1}
    with writer.open(session.id) as logout:
        logout.invalidate()
    with reader.open(session.id) as write_after_logout:
        assert write_after_logout.is_new
        write_after_logout["c"] = 3
    assert write_after_logout.id != session.id


def test_staleness_is_bounded_by_max_age() -> None:
    clock = _Clock()
    shared = MemoryStore()
    reader = SessionManager(
        shared, node_id="reader", events=True,
        near_cache=NearCache(10, max_age=5.0, monotonic=clock),
    )  # fmt: skip
    writer = SessionManager(shared, node_id="writer")
    with writer.open() as session:
        session["a"] = 1
    with reader.open(session.id, read_only=True):
        pass
    with writer.open(session.id) as write:
        write["a"] = 2
    clock.now = 5.0
    with reader.open(session.id, read_only=True) as aged:
        assert aged["a"] == 2


def test_the_cache_is_bounded() -> None:
    reader, writer, _ = _pair(size=3)
    ids = []
    for n in range(5):
        with writer.open() as session:
            session["n"] = n
        ids.append(session.id)
        with reader.open(session.id, read_only=True):
            pass
    assert reader.near_cache is not None and len(reader.near_cache) == 3


def test_a_near_cache_needs_events() -> None:
    with pytest.raises(ConfigError, match="events=True"):
        SessionManager(MemoryStore(), near_cache=10)


def test_the_near_cache_is_off_where_the_store_has_no_channel(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    manager = SessionManager(f"file://{tmp_path / 's'}", events=True, near_cache=10)
    assert manager.near_cache is None
    sqlite = SessionManager(SQLiteStore(str(tmp_path / "s.db")), events=True, near_cache=10)
    try:
        assert sqlite.near_cache is not None
    finally:
        sqlite.close()


def test_logout_everywhere_on_one_node_ends_what_another_node_has_cached() -> None:
    reader, writer, counted = _pair()
    refs = []
    for device in ("laptop", "phone"):
        with writer.open() as session:
            session["device"] = device
            session.principal = "ann"
        refs.append(session.id)
    for sid in refs:
        with reader.open(sid, read_only=True) as cached:
            assert cached["device"]
    calls = len(counted.calls)
    for sid in refs:  # served from the cache: no store call
        with reader.open(sid, read_only=True):
            pass
    assert len(counted.calls) == calls
    ended: list[str] = []
    reader.add_listener(lambda e: ended.append(f"{e.event}:{e.principal}"), ["invalidated"])
    assert writer.invalidate_all("ann") == 2
    assert ended == ["invalidated:ann", "invalidated:ann"]
    for sid in refs:
        with reader.open(sid, read_only=True) as after:
            assert after.is_new and "device" not in after
