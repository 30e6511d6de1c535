"""``file:///dir``: one file per session, safe on a filesystem shared by many hosts.

Layout (see docs/stores-file-dbm.md)::

    dir/<app>/<h[0:2]>/<h[2:4]>/<h>.rec      the record (pack_record, framed with its key)
    dir/<app>/<h[0:2]>/<h[2:4]>/<h>.lock     the short per-session mutex (_lockfile)

``<app>`` is the app id with every byte outside ``[A-Za-z0-9_-]`` escaped as
``%XX`` (so never ``.`` or ``..``), or ``~`` and its SHA-256 when long or
empty; ``<h>`` is the id hash when it is lowercase hex, else ``~`` and its
SHA-256. The two-level fan-out keeps a million sessions at about 15 files
per directory. Each file also carries its own ``RecordKey``, so listing does
not have to decode names.

Every write goes to a unique temp file in the same directory, is fsynced,
renamed over the record (atomic on POSIX filesystems and NFS) and the
directory is fsynced, so a reader, on any host, sees the old or the new
record, never a torn one. Every write runs the shared pure step of
``state.py`` under the session's mutex: a lock file created with
``O_CREAT|O_EXCL`` that names its owner and expiry, broken safely when its
owner died (the argument is in ``_lockfile``). Nothing depends on
``flock``/``fcntl``.

A load that writes nothing (no touch due, or the lease is someone else's)
reads the file without the mutex: the rename makes every read see one whole
version. Lease waiters back off with jitter, as there is no cross-host
notification on a filesystem.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import re
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import ConfigError, NotAStore, StoreUnavailable
from ..ids import session_ref
from ._local import LocalStore, Step
from ._lockfile import LockBusy, Mutex, sweep_orphan
from .state import DELETE, StoredRecord, is_purgeable, load_step, pack_record, unpack_record
from ._url import boolean, query_options, url_path
from .base import LoadResult, LockRequest, RecordInfo, RecordKey, Touch

__all__ = ["FileStore", "decode_file", "encode_file"]

T = TypeVar("T")
log = logging.getLogger("shoal")

_OPTIONS: dict[str, Callable[[str], Any]] = {
    "mutex_ttl": float,
    "mutex_timeout": float,
    "fsync": boolean,
}

_MAGIC = b"SHF1"
_KEY_HEAD = struct.Struct(">4sHH")
_HEX_NAME = re.compile(r"[0-9a-f]{8,128}")
_APP_NAME = re.compile(r"(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+|~[0-9a-f]{64}")  # app_dirname()
_FAN_NAME = re.compile(r"[0-9a-f]{2}")
# Top-level names a filesystem may add beside the apps (a mount point's
# lost+found, an NFS server's .snapshot, a desktop's .DS_Store): no app
# directory starts with "." or holds "+".
_FOREIGN_OK = re.compile(r"\..*|lost\+found")
_APP_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_FILE_MODE = 0o600
_DIR_MODE = 0o700
_READ_RETRIES = 3  # ESTALE: the file was renamed over on another NFS client


class _MutexExpired(Exception):
    """The operation outlived its mutex's safe window; nothing was written."""


def encode_file(key: RecordKey, rec: StoredRecord) -> bytes:
    """A record file's bytes: magic, the key, then ``pack_record``."""
    app, name = key.app_id.encode("utf-8"), key.id_hash.encode("utf-8")
    return b"".join((_KEY_HEAD.pack(_MAGIC, len(app), len(name)), app, name, pack_record(rec)))


def decode_file(blob: bytes) -> tuple[RecordKey, StoredRecord]:
    """The key and record of a record file; ``ValueError`` when damaged."""
    try:
        magic, alen, nlen = _KEY_HEAD.unpack_from(blob, 0)
        pos = _KEY_HEAD.size
        app = blob[pos : pos + alen].decode("utf-8")
        name = blob[pos + alen : pos + alen + nlen].decode("utf-8")
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"record file header unreadable: {exc}") from exc
    if magic != _MAGIC:
        raise ValueError("not a shoal record file")
    return RecordKey(app, name), unpack_record(blob[pos + alen + nlen :])


def app_dirname(app_id: str) -> str:
    """The directory name of an app id: escaped, injective, never ``.``/``..``."""
    raw = app_id.encode("utf-8", "surrogatepass")
    escaped = "".join(chr(b) if b in _APP_SAFE else f"%{b:02X}" for b in raw)
    if not escaped or len(escaped) > 200:
        return "~" + hashlib.sha256(raw).hexdigest()
    return escaped


def record_name(id_hash: str) -> str:
    """The file stem of an id hash; also the source of its fan-out."""
    if _HEX_NAME.fullmatch(id_hash):
        return id_hash
    return "~" + hashlib.sha256(id_hash.encode("utf-8", "surrogatepass")).hexdigest()


class FileStore(LocalStore):
    """Sessions as files under ``root``; see the module docs for the layout."""

    def __init__(
        self,
        root: str,
        *,
        mutex_ttl: float = 10.0,
        mutex_timeout: float = 15.0,
        fsync: bool = True,
        url: str | None = None,
    ) -> None:
        self.root = os.path.abspath(root)
        self.url = url or f"file://{self.root}"
        self.fsync = fsync
        # mutex_ttl: how long a dead holder can block one session; an operation
        # gets ttl/2 to finish. mutex_timeout > mutex_ttl, so a waiter outlasts
        # a stale lock instead of failing with 503.
        try:
            self.mutex = Mutex(ttl=mutex_ttl, timeout=mutex_timeout)
        except ValueError as exc:
            raise ConfigError(f"{self.url}: {exc} (mutex_ttl, mutex_timeout)") from exc
        self._purge_start: tuple[str, ...] | None = None  # where the next purge walk begins

    @classmethod
    def from_url(cls, url: str) -> FileStore:
        return cls(url_path(url), url=url, **query_options(url, _OPTIONS))

    def require_existing(self) -> None:
        """``NotAStore`` unless ``root`` is a directory laid out as a file store.

        A file store has no marker file, so its layout is what tells it: every
        entry of the root is an app directory (``app_dirname``) and every entry
        of those a two-hex-digit fan-out directory. An empty directory is an
        empty store. Only those two levels are listed, not the records, so the
        check costs one ``listdir`` per application. For the admin commands,
        which must not take a plain file or an unrelated directory for an
        empty store (rejected: a marker file, which existing stores lack).
        """
        try:
            apps = os.listdir(self.root)
            for app in apps:
                if _FOREIGN_OK.fullmatch(app):
                    continue
                app_dir = os.path.join(self.root, app)
                if not (_APP_NAME.fullmatch(app) and os.path.isdir(app_dir)):
                    raise self._foreign(app)
                for top in os.listdir(app_dir):
                    if not (_FAN_NAME.fullmatch(top) and os.path.isdir(os.path.join(app_dir, top))):
                        raise self._foreign(os.path.join(app, top))
        except NotADirectoryError as exc:
            raise NotAStore(
                self.url, f"{self.root} is a file; a file:// store is a directory; check --store"
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(self.url, f"{self.root}: {exc.strerror or exc}") from exc

    def _foreign(self, name: str) -> NotAStore:
        return NotAStore(
            self.url,
            f"{self.root} holds {name!r}, which a file store does not (its layout is "
            "<app>/<2 hex>/<2 hex>/<hash>.rec); check --store",
        )

    # -- paths ------------------------------------------------------------

    def paths(self, key: RecordKey) -> tuple[str, str, str]:
        """(bucket directory, record file, mutex lock file) of ``key``."""
        name = record_name(key.id_hash)
        digits = name.lstrip("~")
        bucket = os.path.join(self.root, app_dirname(key.app_id), digits[:2], digits[2:4])
        return bucket, os.path.join(bucket, name + ".rec"), os.path.join(bucket, name + ".lock")

    def lock_path(self, key: RecordKey) -> str:
        """The mutex lock file guarding ``key``'s record."""
        return self.paths(key)[2]

    # -- one record -------------------------------------------------------

    def _read(self, key: RecordKey, path: str) -> StoredRecord | None:
        for attempt in range(_READ_RETRIES):
            try:
                with open(path, "rb") as handle:
                    blob = handle.read()
                break
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno != errno.ESTALE or attempt == _READ_RETRIES - 1:
                    raise
        try:
            found, rec = decode_file(blob)
        except ValueError as exc:
            raise StoreUnavailable(
                self.url, f"session {session_ref(key.id_hash)}: damaged record file ({exc})"
            ) from exc
        if found != key:
            raise StoreUnavailable(
                self.url, f"session {session_ref(key.id_hash)}: record file names another key"
            )
        return rec

    def _write(self, bucket: str, path: str, blob: bytes, held_safe: Callable[[], bool]) -> None:
        """Temp file, fsync, rename into place, fsync the directory."""
        temp = f"{path}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        try:
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if not held_safe():
                raise _MutexExpired
            os.replace(temp, path)
        except BaseException:
            _unlink_quiet(temp)
            raise
        if self.fsync:
            _fsync_dir(bucket)

    def _step(self, key: RecordKey, step: Step[T], *, notify: bool = False) -> T:
        """Run ``step`` on the record under the session's mutex."""
        bucket, path, _ = self.paths(key)

        def run(safe: Callable[[], bool]) -> T:
            rec = self._read(key, path)
            result, outcome = step(rec)
            if outcome is DELETE:
                if not safe():
                    raise _MutexExpired
                if _unlink_quiet(path) and self.fsync:
                    _fsync_dir(bucket)
            elif isinstance(outcome, StoredRecord):
                self._write(bucket, path, encode_file(key, outcome), safe)
                if rec is None and self.fsync:
                    # A first record may have created its bucket: make the
                    # new directory entries durable too.
                    top = os.path.dirname(bucket)
                    for directory in (top, os.path.dirname(top), self.root):
                        _fsync_dir(directory)
            return result

        return self._locked(key, run)

    def _locked(self, key: RecordKey, action: Callable[[Callable[[], bool]], T]) -> T:
        """Run ``action(safe)`` holding ``key``'s mutex; map failures to 503.

        ``safe()`` says whether the mutex is still surely ours; an action that
        finds it is not raises ``_MutexExpired`` before writing, and runs again
        under a fresh mutex while ``mutex_timeout`` lasts.
        """
        lock = self.lock_path(key)
        deadline = time.monotonic() + self.mutex.timeout
        try:
            while True:
                held = self.mutex.acquire(lock, timeout=max(0.0, deadline - time.monotonic()))
                try:
                    return action(held.safe)
                except _MutexExpired:
                    # Stalled past ttl/2: another process may have broken the
                    # mutex, so nothing was written; run the action again afresh.
                    if time.monotonic() >= deadline:
                        raise StoreUnavailable(
                            self.url,
                            f"session {session_ref(key.id_hash)}: operation outlived "
                            f"mutex_ttl={self.mutex.ttl:g}s/2; raise mutex_ttl",
                        ) from None
                finally:
                    held.release()
        except LockBusy as exc:
            raise StoreUnavailable(
                self.url,
                f"session {session_ref(key.id_hash)}: lock file busy for {exc.waited:.1f}s "
                f"(held by {exc.holder}); raise mutex_timeout if this host is slow",
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(
                self.url, f"session {session_ref(key.id_hash)}: {exc.strerror or exc}"
            ) from exc

    # -- the contract -----------------------------------------------------

    def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> LoadResult:
        # Most loads write nothing (no touch due; or the answer is ABSENT,
        # EXPIRED, INVALIDATED, or LOCKED by another holder's live lease):
        # answer those from a lock-free read of the renamed-into-place file,
        # so readers and lease waiters never contend for the mutex.
        try:
            rec = self._read(key, self.paths(key)[1])
        except OSError as exc:
            raise StoreUnavailable(
                self.url, f"session {session_ref(key.id_hash)}: {exc.strerror or exc}"
            ) from exc
        result, outcome = load_step(rec, now=now, touch=touch, lock=lock)
        if outcome is None:
            return result
        return self._step(key, lambda r: load_step(r, now=now, touch=touch, lock=lock))

    def delete(self, key: RecordKey) -> bool:
        """Remove the record outright under its mutex, without reading it.

        Unlike the other operations this does not decode the file, so an
        administrator can remove a damaged record (``shoal rm``).
        """
        bucket, path, _ = self.paths(key)

        def remove(safe: Callable[[], bool]) -> bool:
            if not safe():
                raise _MutexExpired
            removed = _unlink_quiet(path)
            if removed and self.fsync:
                _fsync_dir(bucket)
            return removed

        return self._locked(key, remove)

    def wait_unlocked(self, key: RecordKey, timeout: float) -> None:
        # No notification across hosts on a filesystem: sleep a jittered slice
        # (bounded by ``timeout``) and let the caller re-try its load.
        time.sleep(max(0.0, min(timeout, random.uniform(0.002, 0.02))))

    def records(self, app_id: str | None = None) -> Iterator[RecordInfo]:
        apps = [app_dirname(app_id)] if app_id is not None else None
        try:
            for bucket in self._buckets(apps=apps):
                for name in _listdir(os.path.join(self.root, *bucket)):
                    if not name.endswith(".rec"):
                        continue
                    found = self._peek(os.path.join(self.root, *bucket, name))
                    if found is not None and (app_id is None or found[0].app_id == app_id):
                        yield found[1].info(found[0])
        except OSError as exc:
            raise StoreUnavailable(self.url, f"listing records: {exc.strerror or exc}") from exc

    def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        """Walk the fan-out from where the last call stopped, wrapping round once.

        Each candidate is re-read and re-checked under its mutex before the
        unlink, so a save that extended it meanwhile wins. A call that returns
        less than ``limit`` has visited every bucket. Stray temp files, break
        markers and stale lock files left by killed processes are swept on
        the way (``_lockfile.sweep_orphan``).
        """
        if limit <= 0:
            return 0
        start = self._purge_start
        walk = self._buckets(start=start)
        if start is not None:
            walk = _chain(walk, self._buckets(stop=start))
        deleted = 0
        try:
            for bucket in walk:
                directory = os.path.join(self.root, *bucket)
                for name in sorted(_listdir(directory)):
                    if name.endswith(".rec"):
                        deleted += self._purge_one(directory, name, now=now, grace=grace)
                        if deleted >= limit:
                            self._purge_start = bucket  # it may hold more: start here
                            return deleted
                    else:
                        sweep_orphan(self.mutex, directory, name)
                self._purge_start = (*bucket, "")  # sorts just after this bucket
        except OSError as exc:
            raise StoreUnavailable(self.url, f"purge: {exc.strerror or exc}") from exc
        return deleted

    def _purge_one(self, directory: str, name: str, *, now: float, grace: float) -> int:
        found = self._peek(os.path.join(directory, name))
        if found is None or not is_purgeable(found[1], now=now, grace=grace):
            return 0
        # The metadata said expired: check again under the mutex, where no
        # save can interleave, and delete only if that still holds.
        return int(
            self._step(
                found[0],
                lambda r: (True, DELETE)
                if r is not None and is_purgeable(r, now=now, grace=grace)
                else (False, None),
            )
        )

    def _peek(self, path: str) -> tuple[RecordKey, StoredRecord] | None:
        """Key and record of a file met while walking; None if gone or damaged."""
        try:
            with open(path, "rb") as handle:
                blob = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ESTALE:
                return None
            raise
        try:
            return decode_file(blob)
        except ValueError as exc:
            log.warning("%s: skipping damaged record file %s: %s", self.url, path, exc)
            return None

    def _buckets(
        self,
        *,
        apps: list[str] | None = None,
        start: tuple[str, ...] | None = None,
        stop: tuple[str, ...] | None = None,
    ) -> Iterator[tuple[str, str, str]]:
        """Fan-out buckets ``(app, aa, bb)`` in sorted order, ``start <= b < stop``.

        Listing is lazy and pruned: a directory wholly outside the range is
        never listed.
        """
        for app in apps if apps is not None else sorted(_listdir(self.root)):
            if (start and (app,) < start[:1]) or (stop and (app,) > stop[:1]):
                continue
            app_dir = os.path.join(self.root, app)
            for top in sorted(_listdir(app_dir)):
                if (start and (app, top) < start[:2]) or (stop and (app, top) > stop[:2]):
                    continue
                for sub in sorted(_listdir(os.path.join(app_dir, top))):
                    bucket = (app, top, sub)
                    if (start and bucket < start) or (stop and bucket >= stop):
                        continue
                    yield bucket

    def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""


def _chain(
    first: Iterator[tuple[str, str, str]], second: Iterator[tuple[str, str, str]]
) -> Iterator[tuple[str, str, str]]:
    yield from first
    yield from second


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _fsync_dir(path: str) -> None:
    """Make a rename or unlink in ``path`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (and NFS servers) refuse fsync on a directory; their
        # metadata operations are synchronous anyway.
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _unlink_quiet(path: str) -> bool:
    """Unlink ``path``; False when it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
