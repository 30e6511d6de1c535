"""Code run in child processes (multiprocessing 'spawn') by the tests of this package.

Each function coordinates with the test only through files, the store, and
``multiprocessing`` events; results go to a JSON file the test reads after
``join``. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import random
import time
from multiprocessing.synchronize import Event
from typing import Any

from shoal import SessionManager
from shoal.stores import open_store
from shoal.stores._lockfile import Mutex
from shoal.stores.base import ApplyStatus, Change, LockRequest, RecordKey

HOLD_FOREVER = 300.0  # a holder waits at most this long for a SIGKILL that should come at once


def _write_json(path: str, data: Any) -> None:
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w") as handle:
        json.dump(data, handle)
    os.replace(temp, path)


def hold_mutex(lock_path: str, ttl: float, out: str, ready: Event, never: Event) -> None:
    """Take the lock file directly, report its expiry, then wait to be killed."""
    held = Mutex(ttl=ttl, timeout=30).acquire(lock_path)
    _write_json(out, {"pid": os.getpid(), "expires": held.expires, "token": held.token})
    ready.set()
    never.wait(HOLD_FOREVER)


def hold_lease(url: str, app_id: str, sid: str, lease: float, ready: Event, never: Event) -> None:
    """Open a session under the serialized policy, write to it, wait to be killed."""
    manager = SessionManager(
        url, app_id=app_id, policy="serialized", lock_lease=lease, lock_timeout=30,
        node_id="doomed",
    )
    with manager.open(sid) as session:
        session["by"] = "doomed"  # never committed: the holder dies first
        ready.set()
        never.wait(HOLD_FOREVER)


def take_session(url: str, key: RecordKey, idle: float, out: str) -> None:
    """Load with a lease and save: the operations a request after the crash runs."""
    store = open_store(url)
    try:
        token = f"next:{os.getpid()}:{random.getrandbits(32):x}"
        loaded = store.load(key, now=time.time(), lock=LockRequest(token, 30.0))
        loaded_at = time.time()
        saved = store.apply(
            key,
            Change(idle, set={"after": b"crash"}, lease_token=token, release=True),
            now=time.time(),
        )
        _write_json(out, {"load": loaded.status.value, "loaded_at": loaded_at,
                          "apply": saved.status.value})
    finally:
        store.close()


def open_after_lease(url: str, app_id: str, sid: str, out: str) -> None:
    """A request after the lease holder died: waits out the lease, then writes."""
    manager = SessionManager(
        url, app_id=app_id, policy="serialized", lock_lease=30, lock_timeout=60, node_id="next"
    )
    with manager.open(sid) as session:
        got_at = time.time()
        seen = session.get("by")
        session["by"] = "next"
    _write_json(out, {"got_at": got_at, "seen": seen, "same_id": session.id == sid})


def mutex_rounds(
    lock_path: str,
    workdir: str,
    rounds: int,
    seed: int,
    long_ttl: float,
    short_ttl: float,
    go: Event,
    out: str,
) -> None:
    """Take the lock ``rounds`` times; sometimes "die" holding it, so others must break it.

    Inside the lock: create ``inside`` with O_EXCL (failing means two holders
    at once), bump the shared counter (a read-modify-write that loses counts
    without mutual exclusion), remove ``inside``. A "dying" round takes the
    lock with ``short_ttl`` and never releases it.
    """
    rng = random.Random(seed)
    inside = os.path.join(workdir, "inside")
    counter = os.path.join(workdir, "counter")
    stats = {"rounds": 0, "overlaps": 0, "abandoned": 0, "stalled": 0}
    go.wait(60)
    for _ in range(rounds):
        die = rng.random() < 0.35
        mutex = Mutex(ttl=short_ttl if die else long_ttl, timeout=120)
        held = mutex.acquire(lock_path)
        try:
            fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
        except FileExistsError:
            stats["overlaps"] += 1
        with open(counter, "r+") as handle:
            value = int(handle.read() or "0")
            time.sleep(rng.uniform(0.002, 0.02))  # widen the window a second holder would hit
            handle.seek(0)
            handle.write(str(value + 1))
            handle.truncate()
        if not held.safe():
            stats["stalled"] += 1  # this process stalled past ttl/2: overlap would be ours
        try:
            os.unlink(inside)
        except FileNotFoundError:
            stats["overlaps"] += 1  # another holder entered and left meanwhile
        stats["rounds"] += 1
        if die:
            stats["abandoned"] += 1  # like a SIGKILL here: the lock file stays
        else:
            held.release()
    _write_json(out, stats)


def saver(
    url: str,
    borderline: list[tuple[str, str]],
    live: list[tuple[str, str]],
    now: float,
    idle: float,
    started: Event,
    stop: Event,
    out: str,
    max_live_saves: int,
) -> None:
    """Save sessions through the store API while the test purges.

    Each borderline session is saved once (it would be purgeable at the
    purge's ``now`` unless this save extends it), each followed by a save of
    a live session; then live sessions are saved round-robin until ``stop``
    or ``max_live_saves``.
    """
    store = open_store(url)
    results: dict[str, Any] = {"borderline": {}, "live": {}}
    try:
        started.set()
        for count in range(max(len(borderline), max_live_saves)):
            if count < len(borderline):
                app_id, id_hash = borderline[count]
                result = store.apply(
                    RecordKey(app_id, id_hash), Change(idle, set={"s": b"1"}), now=now
                )
                results["borderline"][id_hash] = [result.status.value, result.version]
            elif stop.is_set():
                break
            app_id, id_hash = live[count % len(live)]
            result = store.apply(
                RecordKey(app_id, id_hash), Change(idle, set={"n": str(count).encode()}), now=now
            )
            ok = result.status is ApplyStatus.OK
            results["live"][id_hash] = [result.status.value, result.version if ok else None]
        _write_json(out, results)
    finally:
        store.close()
