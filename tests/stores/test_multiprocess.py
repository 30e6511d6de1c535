"""file:// and dbm:// across real processes: killed lock holders, purge under load.

Every process opens the store by URL and coordinates only through it (and
``multiprocessing`` events that say "ready"). Children are started with
'spawn', and killed with SIGKILL where the test says so.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import pytest

from shoal import SessionManager, StoreUnavailable
from shoal.stores.state import StoredRecord, pack_record
from shoal.stores.base import Change, LoadStatus, NewRecord, RecordKey
from shoal.stores.dbm import DbmStore, encode_key
from shoal.stores.file import FileStore, encode_file

from . import _workers

KINDS = ["file", "dbm"]
IDLE = 600.0
ctx = multiprocessing.get_context("spawn")
Store = FileStore | DbmStore


def url_of(kind: str, tmp_path: Path, **options: object) -> str:
    base = f"file://{tmp_path / 'sessions'}" if kind == "file" else f"dbm://{tmp_path / 's.dbm'}"
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{base}?{query}" if query else base


def open_kind(url: str) -> Store:
    return FileStore.from_url(url) if url.startswith("file:") else DbmStore.from_url(url)


@pytest.fixture
def children() -> Iterator[Callable[..., SpawnProcess]]:
    """Start spawn children; any still alive at the end are killed (by pid)."""
    started: list[SpawnProcess] = []

    def start(target: Callable[..., None], *args: Any) -> SpawnProcess:
        proc = ctx.Process(target=target, args=args)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.is_alive():
            proc.kill()
        proc.join(10)


def finish(proc: SpawnProcess, timeout: float = 120) -> None:
    proc.join(timeout)
    assert proc.exitcode == 0, f"child exited with {proc.exitcode}"


def kill(proc: SpawnProcess) -> None:
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL


def new_record(now: float) -> NewRecord:
    return NewRecord(created=now, expires=now + IDLE, absolute_expires=now + 10 * IDLE,
                     fields={"before": b"crash"})


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_mutex_holder_frees_the_session_after_expiry(
    kind: str, tmp_path: Path, children: Callable[..., SpawnProcess]
) -> None:
    url = url_of(kind, tmp_path, mutex_ttl=1.5, mutex_timeout=60)
    store = open_kind(url)
    key = RecordKey("app", "c" * 64)
    assert store.create(key, new_record(time.time()), now=time.time())
    ready, never = ctx.Event(), ctx.Event()
    held_out = str(tmp_path / "held.json")
    holder = children(_workers.hold_mutex, store.lock_path(key), 1.5, held_out, ready, never)
    assert ready.wait(60), "the holder never took the lock"
    kill(holder)
    held = json.loads(Path(held_out).read_text())
    owner = store.mutex.read_owner(store.lock_path(key))
    assert owner is not None and f":{held['pid']}:" in owner.owner, "the dead pid's lock stays"

    out = str(tmp_path / "next.json")
    finish(children(_workers.take_session, url, key, IDLE, out))
    result = json.loads(Path(out).read_text())
    assert (result["load"], result["apply"]) == ("loaded", "ok")
    assert result["loaded_at"] >= held["expires"], "a live lock is never broken"
    record = store.load(key, now=time.time()).record
    assert record is not None and dict(record.fields) == {"before": b"crash", "after": b"crash"}
    assert store.mutex.read_owner(store.lock_path(key)) is None
    leftovers = [n for n in os.listdir(os.path.dirname(store.lock_path(key))) if ".break." in n]
    assert leftovers == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_mutex_holder_blocks_writers_until_expiry(
    kind: str, tmp_path: Path, children: Callable[..., SpawnProcess]
) -> None:
    url = url_of(kind, tmp_path, mutex_ttl=3600, mutex_timeout=0.3)
    store = open_kind(url)
    key = RecordKey("app", "d" * 64)
    now = time.time()
    assert store.create(key, new_record(now), now=now)
    ready, never = ctx.Event(), ctx.Event()
    holder = children(
        _workers.hold_mutex, store.lock_path(key), 3600.0, str(tmp_path / "h.json"), ready, never
    )
    assert ready.wait(60)
    kill(holder)
    with pytest.raises(StoreUnavailable, match="mutex_timeout"):
        store.apply(key, Change(IDLE, set={"x": b"1"}), now=now)
    if kind == "file":
        # Plain loads read the renamed-into-place file without the mutex.
        assert store.load(key, now=now).status is LoadStatus.LOADED
    else:
        with pytest.raises(StoreUnavailable):
            store.load(key, now=now)


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_lease_holder_frees_the_session_after_its_lease(
    kind: str, tmp_path: Path, children: Callable[..., SpawnProcess]
) -> None:
    """The serialized policy's lease, in the record: the next request waits it out."""
    url = url_of(kind, tmp_path)
    manager = SessionManager(url, app_id="app", policy="serialized")
    with manager.open() as session:
        session["by"] = "creator"
    sid = session.id
    ready, never = ctx.Event(), ctx.Event()
    holder = children(_workers.hold_lease, url, "app", sid, 2.0, ready, never)
    assert ready.wait(60), "the holder never took the lease"
    (info,) = manager.store.records("app")
    assert info.locked_until is not None
    kill(holder)

    out = str(tmp_path / "next.json")
    finish(children(_workers.open_after_lease, url, "app", sid, out))
    result = json.loads(Path(out).read_text())
    assert result["got_at"] >= info.locked_until, "the lease was honoured until its end"
    assert result["seen"] == "creator", "the dead holder's write was never committed"
    assert result["same_id"]
    with manager.open(sid, read_only=True) as session:
        assert session["by"] == "next"


# -- purge at scale, while another process saves ---------------------------

SIZES = {"file": 100_000, "dbm": 1_000}  # dbm.dumb rewrites its index per delete
T = 1_700_000_000.0
GRACE = 10.0
PURGE_NOW = T + 50.0  # the purge's clock
SAVE_NOW = T + 20.0  # the saver's clock: a request that loaded before the purge began


def stored(expires: float) -> StoredRecord:
    return StoredRecord(
        version=1, created=T - 5000, accessed=T - 5000, expires=expires,
        absolute_expires=T + 100 * IDLE, fields={"k": b"v" * 64}, field_versions={"k": 1},
    )


def fill(store: Store, keys: dict[RecordKey, float]) -> None:
    """Write records straight in the store's own format: fast, no locks needed yet."""
    if isinstance(store, FileStore):
        made: set[str] = set()
        for key, expires in keys.items():
            bucket, path, _ = store.paths(key)
            if bucket not in made:
                os.makedirs(bucket, exist_ok=True)
                made.add(bucket)
            with open(path, "wb") as handle:
                handle.write(encode_file(key, stored(expires)))
    else:
        database = store._module().open(store.path, "c", 0o600)
        try:
            for key, expires in keys.items():
                database[encode_key(key)] = pack_record(stored(expires))
        finally:
            database.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_purge_in_batches_while_another_process_saves_loses_nothing(
    kind: str, tmp_path: Path, children: Callable[..., SpawnProcess]
) -> None:
    """Half the sessions expired long ago; a tenth are borderline: expired by
    the purge's clock but saved (and so extended) by a concurrent request.
    The purge must delete exactly the expired ones and the borderline ones it
    reached before their save; every save that succeeded must survive.
    """
    size = SIZES[kind]
    url = url_of(kind, tmp_path, fsync="false") if kind == "file" else url_of(kind, tmp_path)
    store = open_kind(url)
    rng = random.Random(20261121)
    apps = ["app", "other"]
    expired: list[RecordKey] = []
    borderline: list[RecordKey] = []
    live: list[RecordKey] = []
    for i in range(size):
        key = RecordKey(apps[i % 2], f"{rng.getrandbits(256):064x}")
        (expired if i < size // 2 else borderline if i < size * 6 // 10 else live).append(key)
    fill(store, {
        **{k: T - 1000 for k in expired},  # purgeable whatever happens
        **{k: T + 30 for k in borderline},  # purgeable at PURGE_NOW unless saved first
        **{k: T + 5000 for k in live},
    })
    # The saver meets the purge's walk half-way: it goes in reverse order.
    to_save = sorted(borderline, key=lambda k: (k.app_id, k.id_hash), reverse=True)
    started, stop = ctx.Event(), ctx.Event()
    out = str(tmp_path / "saver.json")
    saver = children(
        _workers.saver, url,
        [(k.app_id, k.id_hash) for k in to_save],
        [(k.app_id, k.id_hash) for k in live[:2000]],
        SAVE_NOW, IDLE, started, stop, out, 50_000,
    )
    assert started.wait(60)
    purged = batches = 0
    batch = max(10, size // 100)  # 1000 for the file store
    for _ in range(10 * size // batch + 10):  # bounded; ends when a batch comes up short
        deleted = store.purge(now=PURGE_NOW, grace=GRACE, limit=batch)
        purged, batches = purged + deleted, batches + 1
        if deleted < batch:
            break
    stop.set()
    finish(saver, timeout=300)
    saved = json.loads(Path(out).read_text())

    remaining = {info.key: info for info in store.records()}
    assert not any(k in remaining for k in expired), "every expired session was purged"
    assert all(k in remaining for k in live), "no live session was purged"
    outcomes = {"ok": 0, "gone": 0}
    for key in borderline:
        status, version = saved["borderline"][key.id_hash]
        outcomes[status] += 1
        if status == "ok":
            assert key in remaining and remaining[key].version >= version, "a save was lost"
        else:
            assert status == "gone" and key not in remaining
    live_by_hash = {k.id_hash: k for k in live}
    for id_hash, (status, version) in saved["live"].items():
        assert status == "ok" and remaining[live_by_hash[id_hash]].version == version
    assert saved["live"], "live sessions were saved during the purge"
    assert purged == len(expired) + outcomes["gone"]
    assert batches > 1
    print(f"{kind}: {size} sessions, purged {purged} in {batches} batches; borderline "
          f"saved {outcomes['ok']}, purged first {outcomes['gone']}; "
          f"{len(saved['live'])} live sessions saved meanwhile")
    # Remove the files now (kept when the test fails): else every later pytest
    # session pays for them when it prunes old temporary directories.
    shutil.rmtree(tmp_path)
