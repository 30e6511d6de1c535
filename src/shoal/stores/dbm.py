"""``dbm:///path``: Python's dbm behind one lock file, for one host.

Parity with mod_python's ``DbmSession``: all sessions in one dbm database
(``dbm.gnu``, else ``dbm.ndbm``, else the pure-Python ``dbm.dumb``: whatever
this Python has; an existing database keeps the kind it was made with), one
key per ``(app_id, id_hash)`` whose value is ``state.pack_record``.

One host only. Every operation holds the database's lock file (``<path>.lock``,
the ``_lockfile`` mutex: no ``flock``/``fcntl``), so processes of one host
never interleave; that works on NFS too, but the dbm libraries cache pages
and write in place, so a database shared by hosts is neither fast nor
crash-safe: use ``file://`` there. The dbm is opened and closed inside each
operation, under the lock: a handle never crosses ``fork()`` and never serves
stale pages written by another process (rejected: a cached handle, which
needs cache invalidation across processes and dies badly in a forked child,
where ``dbm.dumb`` rewrites its index on garbage collection).

Cost: ``dbm.dumb`` (the only kind in Pythons built without gdbm/ndbm) reads
its whole index at open and rewrites it at each close and delete, so every
operation is O(sessions); it suits small sites, like mod_python's. gdbm is
opened with ``u`` (no gdbm locking: the lock file serialises access).
"""

from __future__ import annotations

import dbm
import importlib
import os
import random
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, TypeVar

from ..errors import ConfigError, NotAStore, StoreUnavailable
from ..ids import session_ref
from ._local import LocalStore, Step
from ._lockfile import Held, LockBusy, Mutex
from .state import DELETE, StoredRecord, is_purgeable, pack_record, unpack_record
from ._url import query_options, url_path
from .base import RecordInfo, RecordKey

__all__ = ["DbmStore"]

T = TypeVar("T")

_OPTIONS: dict[str, Callable[[str], Any]] = {"mutex_ttl": float, "mutex_timeout": float}
_KINDS = ("dbm.gnu", "dbm.ndbm", "dbm.dumb")
_KEY_HEAD = struct.Struct(">H")
_BATCH = 200  # keys examined per lock hold while purging
_FILE_MODE = 0o600
_ERRORS: tuple[type[BaseException], ...] = (OSError, *dbm.error)


def encode_key(key: RecordKey) -> bytes:
    app = key.app_id.encode("utf-8")
    return _KEY_HEAD.pack(len(app)) + app + key.id_hash.encode("utf-8")


def decode_key(raw: bytes) -> RecordKey:
    (alen,) = _KEY_HEAD.unpack_from(raw, 0)
    pos = _KEY_HEAD.size
    return RecordKey(raw[pos : pos + alen].decode("utf-8"), raw[pos + alen :].decode("utf-8"))


def _is_record(raw: bytes, value: bytes) -> bool:
    """Whether a key and its value have the shape this store writes."""
    if len(raw) < _KEY_HEAD.size or _KEY_HEAD.size + _KEY_HEAD.unpack_from(raw)[0] >= len(raw):
        return False
    try:
        decode_key(raw)
        unpack_record(bytes(value))
    except (ValueError, struct.error):  # UnicodeDecodeError is a ValueError
        return False
    return True


class DbmStore(LocalStore):
    """All sessions in one dbm database; every operation under one lock file."""

    def __init__(
        self,
        path: str,
        *,
        mutex_ttl: float = 10.0,
        mutex_timeout: float = 15.0,
        url: str | None = None,
    ) -> None:
        self.path = os.path.abspath(path)
        self.url = url or f"dbm://{self.path}"
        try:
            self.mutex = Mutex(ttl=mutex_ttl, timeout=mutex_timeout)
        except ValueError as exc:
            raise ConfigError(f"{self.url}: {exc} (mutex_ttl, mutex_timeout)") from exc
        self._purge_after: bytes | None = None  # last key the previous purge examined
        self._existing_only = False  # see require_existing()

    @classmethod
    def from_url(cls, url: str) -> DbmStore:
        return cls(url_path(url), url=url, **query_options(url, _OPTIONS))

    def lock_path(self, key: RecordKey | None = None) -> str:
        """The lock file guarding the whole database (every key shares it)."""
        return self.path + ".lock"

    def require_existing(self) -> None:
        """``NotAStore`` unless ``path`` is a dbm database of shoal's; never create one.

        A dbm has no marker, so its first key tells: it must be an
        ``encode_key`` whose value is a ``pack_record``. An empty database is
        an empty store. From now on a write opens the database as it is
        (flag ``w``, not ``c``). For the admin commands, which must not take a
        plain file or another program's dbm for a store.
        """
        self._existing_only = True
        kind = dbm.whichdb(self.path)
        if not kind:
            found = "no dbm database" if kind == "" else "nothing readable as a dbm database"
            raise NotAStore(self.url, f"{self.path} holds {found}; check --store")
        with self._database(write=False) as (database, _):
            first = next(iter(database.keys()), None) if database is not None else None
            if first is not None and not _is_record(bytes(first), database[first]):
                raise NotAStore(
                    self.url,
                    f"{self.path} is a dbm database of another program (its keys are not "
                    "shoal's); check --store",
                )

    # -- the database, under the lock --------------------------------------

    def _module(self) -> ModuleType:
        """The dbm kind of an existing database, else the best one available."""
        existing = dbm.whichdb(self.path)
        if existing == "":
            raise StoreUnavailable(self.url, "the file exists but is no dbm database")
        names = (existing,) if existing else _KINDS
        for name in names:
            try:
                return importlib.import_module(name)
            except ImportError:
                continue
        raise StoreUnavailable(self.url, f"this Python lacks {existing}, which made the file")

    @contextmanager
    def _database(self, *, write: bool) -> Iterator[tuple[Any, Held]]:
        """Hold the lock file and the open database; close both afterwards.

        Yields the database (None for a read when there is none yet) and the
        held lock, whose ``safe()`` a writer checks before it writes.
        """
        try:
            held = self.mutex.acquire(self.lock_path())
        except LockBusy as exc:
            raise StoreUnavailable(
                self.url,
                f"lock file busy for {exc.waited:.1f}s (held by {exc.holder}); "
                "raise mutex_timeout, or use file:// for busy sites",
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(self.url, f"lock file: {exc.strerror or exc}") from exc
        try:
            module = self._module()
            if not write and not dbm.whichdb(self.path):
                yield None, held
                return
            flag = ("w" if self._existing_only else "c") if write else "r"
            if module.__name__ == "dbm.gnu":
                flag += "u"  # our lock file serialises access, not gdbm's flock
            database = module.open(self.path, flag, _FILE_MODE)
            try:
                yield database, held
            finally:
                database.close()
        except _ERRORS as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc
        finally:
            held.release()

    def _step(self, key: RecordKey, step: Step[T], *, notify: bool = False) -> T:
        raw = encode_key(key)
        # Every operation may write (touch, lease), so it opens for writing.
        with self._database(write=True) as (database, held):
            rec = self._get(database, raw, key)
            result, outcome = step(rec)
            if outcome is not None and not held.safe():
                # Stalled past ttl/2: the lock may have been broken; write nothing.
                raise StoreUnavailable(
                    self.url, f"operation outlived mutex_ttl={self.mutex.ttl:g}s/2; raise it"
                )
            if outcome is DELETE:
                if raw in database:
                    del database[raw]
            elif isinstance(outcome, StoredRecord):
                database[raw] = pack_record(outcome)
            return result

    def delete(self, key: RecordKey) -> bool:
        """Remove the record outright without decoding it (so a damaged one too)."""
        raw = encode_key(key)
        with self._database(write=True) as (database, held):
            if raw not in database:
                return False
            if not held.safe():
                raise StoreUnavailable(
                    self.url, f"operation outlived mutex_ttl={self.mutex.ttl:g}s/2; raise it"
                )
            del database[raw]
            return True

    def _get(self, database: Any, raw: bytes, key: RecordKey) -> StoredRecord | None:
        blob = database.get(raw) if database is not None else None
        if blob is None:
            return None
        try:
            return unpack_record(bytes(blob))
        except ValueError as exc:
            raise StoreUnavailable(
                self.url, f"session {session_ref(key.id_hash)}: damaged record ({exc})"
            ) from exc

    # -- the contract -----------------------------------------------------

    def wait_unlocked(self, key: RecordKey, timeout: float) -> None:
        # No notification between processes: a jittered slice of the timeout.
        time.sleep(max(0.0, min(timeout, random.uniform(0.002, 0.02))))

    def records(self, app_id: str | None = None) -> Iterator[RecordInfo]:
        with self._database(write=False) as (database, _):
            found: list[RecordInfo] = []
            if database is not None:
                for raw in list(database.keys()):
                    key = decode_key(bytes(raw))
                    if app_id is None or key.app_id == app_id:
                        rec = self._get(database, bytes(raw), key)
                        if rec is not None:
                            found.append(rec.info(key))
        yield from found

    def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        """Examine keys in sorted order from where the last call stopped, in batches.

        Each batch of ``_BATCH`` keys is one lock hold, so live traffic waits
        at most one batch; the expiry is checked under that same hold, so a
        concurrent save always wins. A call that returns less than ``limit``
        has examined every key once.
        """
        if limit <= 0:
            return 0
        with self._database(write=False) as (database, _):
            keys = sorted(bytes(k) for k in database.keys()) if database is not None else []
        after = self._purge_after
        if after is not None:
            keys = [k for k in keys if k > after] + [k for k in keys if k <= after]
        deleted = 0
        for first in range(0, len(keys), _BATCH):
            with self._database(write=True) as (database, held):
                for raw in keys[first : first + _BATCH]:
                    if not held.safe():
                        raise StoreUnavailable(
                            self.url, f"purge batch outlived mutex_ttl={self.mutex.ttl:g}s/2"
                        )
                    rec = self._get(database, raw, decode_key(raw))
                    self._purge_after = raw
                    if rec is not None and is_purgeable(rec, now=now, grace=grace):
                        del database[raw]
                        deleted += 1
                        if deleted >= limit:
                            return deleted
        return deleted

    def close(self) -> None:
        """Nothing to release: each operation opens and closes the database."""
