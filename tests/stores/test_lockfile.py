"""The lock-file mutex (stores/_lockfile.py): taking, releasing, breaking stale locks.

The breaking races are first played out step by step in one process with a
manual clock (deterministic), then raced by real processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from pathlib import Path

import pytest

from shoal import ManualClock
from shoal.stores._lockfile import ORPHAN_AGE, LockBusy, Mutex, sweep_orphan

from . import _workers

T0 = 1_700_000_000.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=T0)


@pytest.fixture
def lock(tmp_path: Path) -> str:
    return str(tmp_path / "a" / "b" / "x.lock")


def markers(lock: str) -> list[str]:
    directory, name = os.path.split(lock)
    return sorted(n for n in os.listdir(directory) if n.startswith(name + ".break."))


def test_lock_file_names_owner_and_expiry(lock: str, clock: ManualClock) -> None:
    mutex = Mutex(ttl=10, timeout=1, clock=clock)
    held = mutex.acquire(lock)
    owner = mutex.read_owner(lock)
    assert owner is not None
    assert owner.owner == f"{socket.gethostname()}:{os.getpid()}:{held.token}"
    assert owner.expires == T0 + 10 and not owner.stale(T0 + 9.99) and owner.stale(T0 + 10)
    assert os.listdir(os.path.dirname(lock)) == ["x.lock"], "no temp file is left behind"
    held.release()
    assert mutex.read_owner(lock) is None


def test_a_live_lock_makes_others_time_out(lock: str, clock: ManualClock) -> None:
    held = Mutex(ttl=10, timeout=1, clock=clock).acquire(lock)
    with pytest.raises(LockBusy) as caught:
        Mutex(ttl=10, timeout=0.05, clock=clock).acquire(lock)
    assert caught.value.holder is not None and held.token in caught.value.holder
    assert Mutex(ttl=10, timeout=1, clock=clock).try_acquire(lock) is None


def test_a_waiter_gets_a_turn_before_the_releaser_takes_the_lock_again(
    lock: str, clock: ManualClock
) -> None:
    """Polling locks favour the releaser; a waiter's flag makes it hold back once."""
    holder = Mutex(ttl=10, timeout=1, clock=clock)
    held = holder.acquire(lock)
    with pytest.raises(LockBusy):
        Mutex(ttl=10, timeout=0.05, clock=clock).acquire(lock)
    assert not os.path.exists(lock + ".wait"), "a short wait is normal traffic"
    with pytest.raises(LockBusy):
        Mutex(ttl=10, timeout=0.3, clock=clock).acquire(lock)
    assert os.path.exists(lock + ".wait"), "a starving waiter left its flag"
    held.release()
    assert not os.path.exists(lock + ".wait") and lock in holder.pause_until
    holder.acquire(lock).release()
    assert lock not in holder.pause_until, "the courtesy pause is taken once"


def test_a_stale_lock_is_broken_and_taken(lock: str, clock: ManualClock) -> None:
    dead = Mutex(ttl=10, timeout=1, clock=clock).acquire(lock)  # never released
    clock.advance(10)
    held = Mutex(ttl=10, timeout=1, clock=clock).acquire(lock)
    assert held.token != dead.token
    owner = Mutex(ttl=10, timeout=1, clock=clock).read_owner(lock)
    assert owner is not None and owner.token == held.token
    assert markers(lock) == [], "the breaker cleans up its marker"


def test_two_breakers_that_saw_the_same_stale_lock_cannot_both_win(
    lock: str, clock: ManualClock
) -> None:
    Mutex(ttl=10, timeout=1, clock=clock).acquire(lock)
    clock.advance(11)
    a, b = Mutex(ttl=10, timeout=1, clock=clock), Mutex(ttl=10, timeout=1, clock=clock)
    seen_by_a, seen_by_b = a.read_owner(lock), b.read_owner(lock)
    assert seen_by_a is not None and seen_by_b is not None and seen_by_a.stale(clock())
    # A breaks it and takes a fresh lock; B, acting on its old reading, must not
    # remove A's fresh lock (the race that sinks "read, see stale, unlink").
    assert a.remove_instance(lock, seen_by_a.token, require_stale=True)
    fresh = a.try_acquire(lock)
    assert fresh is not None
    assert not b.remove_instance(lock, seen_by_b.token, require_stale=True)
    owner = a.read_owner(lock)
    assert owner is not None and owner.token == fresh.token
    assert b.try_acquire(lock) is None


def test_a_breaker_that_died_holding_its_marker_is_escalated_past(
    lock: str, clock: ManualClock
) -> None:
    dead = Mutex(ttl=10, timeout=1, clock=clock).acquire(lock)
    clock.advance(11)
    # A breaker created generation 1 of the marker and was killed.
    Path(f"{lock}.break.{dead.token}.1").touch()
    os.utime(f"{lock}.break.{dead.token}.1", (clock(), clock()))
    breaker = Mutex(ttl=10, timeout=1, clock=clock)
    assert not breaker.remove_instance(lock, dead.token, require_stale=True), (
        "a fresh marker means another breaker is at work"
    )
    clock.advance(11)  # the marker is now older than ttl: its breaker is dead
    assert breaker.remove_instance(lock, dead.token, require_stale=True)
    assert breaker.read_owner(lock) is None
    assert markers(lock) == [], "generation 1 and 2 are removed once the instance is gone"


def test_markers_of_dead_breakers_stay_while_the_instance_lives(
    lock: str, clock: ManualClock
) -> None:
    held = Mutex(ttl=10, timeout=1, clock=clock).acquire(lock)
    marker = f"{lock}.break.{held.token}.1"
    Path(marker).touch()
    os.utime(marker, (clock() - 20, clock() - 20))
    # Not stale yet: a breaker escalates to generation 2, finds it live, backs off,
    # and must leave generation 1 alone (else a newcomer could re-create it).
    assert not Mutex(ttl=10, timeout=1, clock=clock).remove_instance(
        lock, held.token, require_stale=True
    )
    assert markers(lock) == [os.path.basename(marker)]


def test_an_owner_past_its_safe_window_releases_only_its_own_instance(
    lock: str, clock: ManualClock
) -> None:
    mutex = Mutex(ttl=10, timeout=1, clock=clock)
    late = mutex.acquire(lock)
    late.safe_until = 0.0  # it stalled past ttl/2 ...
    clock.advance(11)
    assert mutex.remove_instance(lock, late.token, require_stale=True)  # ... and was broken
    fresh = mutex.acquire(lock)
    late.release()
    owner = mutex.read_owner(lock)
    assert owner is not None and owner.token == fresh.token, "the late release removed nothing"
    fresh.release()
    assert mutex.read_owner(lock) is None


def test_an_unreadable_lock_file_expires_ttl_after_its_mtime(
    lock: str, clock: ManualClock
) -> None:
    os.makedirs(os.path.dirname(lock))
    Path(lock).write_bytes(b"\xff garbage")
    os.utime(lock, (clock(), clock()))
    mutex = Mutex(ttl=10, timeout=0.05, clock=clock)
    with pytest.raises(LockBusy):
        mutex.acquire(lock)
    clock.advance(10)
    mutex.acquire(lock).release()
    assert mutex.read_owner(lock) is None


def test_sweep_removes_old_leftovers_only(lock: str, clock: ManualClock) -> None:
    mutex = Mutex(ttl=10, timeout=1, clock=clock)
    held = mutex.acquire(lock)
    directory = os.path.dirname(lock)
    old = clock() - ORPHAN_AGE - 1
    leftovers = {
        "x.lock.abcd.tmp": old,  # a temp file of a killed process
        "x.rec.abcd.tmp": old,  # a record temp file of a killed writer
        "x.rec.new1.tmp": clock(),  # a writer at work right now
        f"x.lock.break.{held.token}.1": old,  # its instance is still there: keep
        "x.lock.break.gone.1": old,  # its instance is gone for good
        "x.lock.wait": old,  # the flag of a waiter that died
    }
    for name, mtime in leftovers.items():
        Path(directory, name).touch()
        os.utime(os.path.join(directory, name), (mtime, mtime))
    removed = {name for name in leftovers if sweep_orphan(mutex, directory, name)}
    assert removed == {
        "x.lock.abcd.tmp", "x.rec.abcd.tmp", "x.lock.break.gone.1", "x.lock.wait"
    }
    assert not sweep_orphan(mutex, directory, "x.lock"), "a live lock is never swept"


def test_racing_processes_never_hold_the_lock_together(tmp_path: Path) -> None:
    """Several processes take one lock file in turn; some "die" holding it.

    The others must wait out the dead holder's expiry and race to break the
    stale lock; the O_EXCL ``inside`` file and the shared counter show that
    exactly one of them proceeds at a time.
    """
    workers, rounds = 4, 8
    lock = str(tmp_path / "race" / "s.lock")
    (tmp_path / "counter").write_text("0")
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    outs = [str(tmp_path / f"out{i}.json") for i in range(workers)]
    procs = [
        ctx.Process(
            target=_workers.mutex_rounds,
            args=(lock, str(tmp_path), rounds, 1000 + i, 60.0, 0.5, go, outs[i]),
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        go.set()
        for proc in procs:
            proc.join(240)
            assert proc.exitcode == 0, f"worker exited with {proc.exitcode}"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    stats = [json.loads(Path(out).read_text()) for out in outs]
    total = sum(s["rounds"] for s in stats)
    abandoned = sum(s["abandoned"] for s in stats)
    assert total == workers * rounds
    assert abandoned > 0, "the seeds make some holders die, so stale locks were broken"
    if sum(s["stalled"] for s in stats):
        pytest.skip("a holder stalled past ttl/2 (overloaded machine): the run proves nothing")
    assert sum(s["overlaps"] for s in stats) == 0
    assert int((tmp_path / "counter").read_text()) == total, "no increment was lost"
