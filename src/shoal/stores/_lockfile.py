"""Short mutexes as lock files, safe on a filesystem shared by several hosts.

The file and dbm stores hold one of these for a single read-modify-write (a
few system calls), never for a request: the serialized policy's session
*lease* lives inside the record (``StoredRecord.lease_token``). Nothing here
uses ``flock``/``fcntl``/``lockf``, which NFS does not honour reliably
(rejected: they would make the stores one-host only, like mod_python's).

Taking the lock
    The owner creates the lock path with ``O_CREAT|O_EXCL`` and writes
    ``host:pid:token expires`` into it at once. Exclusive create is atomic
    on local filesystems and on NFSv3+ (whose exclusive CREATE carries a
    verifier, so a retransmission cannot fail our own create). A reader that
    catches the file before its line is written, or after its owner died
    right after creating it, names it by inode and mtime and judges it
    stale ``ttl`` after its mtime. ``expires`` is wall-clock time: hosts
    must agree on the time to well within ``ttl / 2`` (NTP). Rejected:
    ``link(2)`` of a uniquely named, already written file (the NFSv2-era
    recipe): never empty, but two more round trips per lock on NFS.

Using it
    The owner acts only while ``Held.safe()``: less than ``ttl / 2`` has
    passed on its monotonic clock since it started to take the lock. Before
    its last write (the rename of a record into place) it checks again and
    gives up the operation when the window is over. Like every lease lock,
    this assumes no process stalls for ``ttl / 2`` between that check and
    the write; ``ttl`` is a URL parameter (``mutex_ttl``).

Breaking a stale lock (the owner died: ``expires`` has passed)
    A breaker that read token ``T`` from an expired lock must first create
    the marker ``<lock>.break.T.1`` with ``O_EXCL``. Only the one process
    that created the marker may remove the lock instance ``T``. Holding it,
    it re-reads the lock file and unlinks it only if it still carries ``T``;
    then it removes its markers.

    Why two breakers cannot both win: tokens are unique, so the file at the
    lock path carries ``T`` from its creation until the one marker holder
    unlinks it; nobody else may unlink it (the owner itself goes through the
    same marker once its safe window is over, see ``Held.release``), and no
    one can create the lock path while it exists. So when the marker holder
    re-reads ``T`` the file is still that instance when it unlinks it. A
    breaker that read ``T`` long ago and gets a marker only after the first
    winner cleaned up re-reads a different token (or nothing) and backs off:
    ``T`` can never reappear. The race that sinks "read, see stale, unlink"
    (breaker A unlinks the fresh lock breaker B just took) cannot happen,
    and neither can the rename-then-check variant's lost put-back.

    A breaker that dies holding its marker would block ``T`` forever, so a
    marker older than ``ttl`` is itself stale; waiters then escalate to
    ``<lock>.break.T.2`` (``O_EXCL`` again: one winner per generation),
    never delete someone else's marker to re-create it (two deleters could
    each re-create it and both win).

Fairness: a waiter that has waited long leaves a ``<lock>.wait`` flag, and
the releaser that removes it holds back its own next acquire briefly (see
``Mutex.__init__``).

Garbage: a process killed mid-way can leave a temp file (a record being
written), a wait flag or a marker behind; ``sweep_orphan`` (run by the file
store's purge) removes those older than an hour (a marker only when its lock
instance is gone) and breaks stale lock files.
"""

from __future__ import annotations

import errno
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Held", "LockBusy", "LockOwner", "Mutex", "ORPHAN_AGE", "sweep_orphan"]

ORPHAN_AGE = 3600.0
"""Seconds after which a leftover temp file, wait flag or marker is garbage."""

_MAX_GENERATIONS = 16
_BACKOFF_FIRST, _BACKOFF_CAP = 0.001, 0.016
_COURTESY = 0.03  # > the longest jittered backoff (1.5 x cap): a waiter polls within it
_STARVING = 0.1  # a waiter this late asks for a turn; shorter waits are normal traffic
_FILE_MODE = 0o600
_DIR_MODE = 0o700


class LockBusy(Exception):
    """The lock stayed held for the whole timeout. Stores turn it into ``StoreUnavailable``."""

    def __init__(self, path: str, waited: float, holder: str | None) -> None:
        super().__init__(f"lock file held for {waited:.3f}s by {holder or 'nobody visible'}")
        self.path = path
        self.waited = waited
        self.holder = holder


@dataclass(frozen=True, slots=True)
class LockOwner:
    """What a lock file says: ``host:pid:token`` and its wall-clock expiry."""

    owner: str
    token: str
    expires: float

    def stale(self, now: float) -> bool:
        return self.expires <= now


@dataclass(slots=True)
class Held:
    """A lock this process holds; ``release`` it in a ``finally``."""

    mutex: Mutex
    path: str
    token: str
    expires: float
    safe_until: float  # time.monotonic() deadline for acting under the lock
    released: bool = False

    def safe(self) -> bool:
        """True while no other process can have broken this lock."""
        return time.monotonic() < self.safe_until

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self.safe():
            # Within the window nobody may break it: a plain unlink removes our instance.
            _unlink_quiet(self.path)
        else:
            # It may have been broken and re-taken: remove it only if still ours.
            self.mutex.remove_instance(self.path, self.token, require_stale=False)
        if _unlink_quiet(self.path + ".wait"):
            # Someone waited meanwhile: hold back our own next acquire briefly.
            self.mutex.pause_until[self.path] = time.monotonic() + _COURTESY


class Mutex:
    """Lock-file mutexes with one ``ttl`` (seconds) and one acquire ``timeout``."""

    def __init__(
        self,
        *,
        ttl: float,
        timeout: float,
        clock: Callable[[], float] = time.time,
        host: str | None = None,
    ) -> None:
        if ttl <= 0 or timeout < 0:
            raise ValueError("lock ttl must be > 0 and timeout >= 0 seconds")
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self.host = host or socket.gethostname()
        # Fairness: polling locks favour the process that just released (it
        # is on a CPU, waiters are asleep), which starved waiters for seconds
        # on a busy dbm. A waiter that has waited ``_STARVING`` drops a
        # ``<lock>.wait`` flag; the releaser that removes it waits ``_COURTESY``
        # before it takes that lock again. Short waits leave no flag, so a
        # request's own back-to-back operations are not slowed by brief
        # contention. Rejected: a ticket queue of files (a listing per acquire).
        self.pause_until: dict[str, float] = {}

    # -- taking and reading -------------------------------------------------

    def acquire(self, path: str, *, timeout: float | None = None) -> Held:
        """Take the lock at ``path``, breaking a stale one; ``LockBusy`` on timeout."""
        limit = self.timeout if timeout is None else timeout
        started = time.monotonic()
        deadline = started + limit
        courtesy = self.pause_until.pop(path, 0.0) - started
        if courtesy > 0:
            time.sleep(min(courtesy, limit))
        delay = _BACKOFF_FIRST
        seen: LockOwner | None = None
        while True:
            held = self.try_acquire(path)
            if held is not None:
                return held
            seen = self.read_owner(path)
            if seen is not None and seen.stale(self.clock()):
                if self.remove_instance(path, seen.token, require_stale=True):
                    continue  # broken: race for it again at once
            now = time.monotonic()
            if now >= deadline:
                raise LockBusy(path, now - started, seen.owner if seen else None)
            if seen is None:
                continue  # released between our attempt and our read: retry now
            if now - started >= _STARVING:
                _touch(path + ".wait")
            time.sleep(min(deadline - now, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, _BACKOFF_CAP)

    def try_acquire(self, path: str) -> Held | None:
        """One attempt: the lock if it was free, else None. Never waits."""
        token = secrets.token_hex(8)
        start_mono, start_wall = time.monotonic(), self.clock()
        expires = start_wall + self.ttl
        content = f"{self.host}:{os.getpid()}:{token} {expires!r}\n".encode()
        try:
            _write_new(path, content)
        except FileExistsError:
            return None
        return Held(self, path, token, expires, start_mono + self.ttl / 2)

    def read_owner(self, path: str) -> LockOwner | None:
        """The lock file's owner, or None when there is no lock file."""
        try:
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                raw = handle.read(512)
        except FileNotFoundError:
            return None
        try:
            owner, expires = raw.decode("utf-8").strip().rsplit(" ", 1)
            token = owner.rsplit(":", 1)[1]
            if not token.isalnum():
                raise ValueError("bad token")
            return LockOwner(owner, token, float(expires))
        except (UnicodeDecodeError, ValueError, IndexError):
            # Caught before its owner wrote its line (or its owner died right
            # after creating it, or it is foreign): name the instance by inode
            # and mtime, and let it expire ``ttl`` after its mtime.
            return LockOwner(
                "unreadable", f"x{stat.st_ino}x{stat.st_mtime_ns}", stat.st_mtime + self.ttl
            )

    # -- breaking -------------------------------------------------------------

    def remove_instance(self, path: str, token: str, *, require_stale: bool) -> bool:
        """Unlink the lock at ``path`` if it is still instance ``token``.

        Exclusive through the ``O_EXCL`` break marker (see the module docs).
        With ``require_stale`` the instance must also have expired. True when
        this call removed it.
        """
        mine = 0  # the generation of the marker this call created
        gone = False  # instance ``token`` is known to be gone for good
        try:
            for generation in range(1, _MAX_GENERATIONS + 1):
                marker = f"{path}.break.{token}.{generation}"
                try:
                    _write_new(marker, b"")
                except FileExistsError:
                    try:
                        age = self.clock() - os.stat(marker).st_mtime
                    except FileNotFoundError:
                        return False  # its holder just finished; look again later
                    if age > self.ttl:
                        continue  # its breaker died: escalate, never delete it
                    return False  # another breaker is at work
                mine = generation
                current = self.read_owner(path)
                if current is None or current.token != token:
                    gone = True
                    return False
                if require_stale and not current.stale(self.clock()):
                    return False  # the wall clock went back: leave it be
                try:
                    os.unlink(path)
                except FileNotFoundError:  # pragma: no cover - only we may unlink it
                    gone = True
                    return False
                gone = True
                return True
            return False
        finally:
            # Once instance ``token`` is gone it never comes back, so every
            # marker for it (ours and dead breakers') means nothing any more.
            # While it is still there, dead breakers' markers must stay, or a
            # newcomer could re-create generation 1 beside a live generation 2.
            for generation in range(1 if gone else mine, mine + 1):
                if generation:
                    _unlink_quiet(f"{path}.break.{token}.{generation}")


def sweep_orphan(mutex: Mutex, directory: str, name: str, *, age: float = ORPHAN_AGE) -> bool:
    """Remove one leftover of a killed process if it is garbage; True if removed.

    ``*.tmp`` files (records being written) and ``*.wait`` flags older than
    ``age`` belong to nobody. A break marker is removed only when its lock instance is
    gone (never to come back), so removing it cannot let two breakers in.
    """
    path = os.path.join(directory, name)
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return False
    if mutex.clock() - mtime < age:
        return False
    if name.endswith((".tmp", ".wait")):
        return _unlink_quiet(path)
    lock, sep, rest = name.partition(".break.")
    if sep:
        token = rest.rsplit(".", 1)[0]
        current = mutex.read_owner(os.path.join(directory, lock))
        if current is None or current.token != token:
            return _unlink_quiet(path)
        return False
    if name.endswith(".lock"):
        current = mutex.read_owner(path)
        if current is not None and current.stale(mutex.clock()):
            return mutex.remove_instance(path, current.token, require_stale=True)
    return False


def _write_new(path: str, content: bytes) -> None:
    """Create ``path`` exclusively with ``content``, making its directory if needed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, _FILE_MODE)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=_DIR_MODE, exist_ok=True)
        fd = os.open(path, flags, _FILE_MODE)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _touch(path: str) -> None:
    """Create ``path`` if missing (a flag: its content does not matter)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), _FILE_MODE))
    except FileNotFoundError:
        pass  # the directory went away with the lock: nothing to wait for


def _unlink_quiet(path: str) -> bool:
    """Unlink ``path``; False when it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:  # ESTALE on NFS: the file is gone
        if exc.errno == errno.ESTALE:
            return False
        raise
    return True
