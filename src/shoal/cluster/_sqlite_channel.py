"""SQLite's event channel: an append-only table read by each process's listener thread.

Every process of the host shares the database file (WAL mode), so one
``INSERT`` reaches all of them; each listener polls from the last ``seq`` it
read, and ``PRAGMA data_version`` makes an idle poll a cheap read with no
table scan. Retention is bounded by count (``retention`` rows): a listener
that fell further behind than that logs the events it missed.
Rejected: a Unix socket per process (a home-made network layer) and
inotify on the WAL file (Linux-only, fires on every session write).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

from . import _statements as q
from ._receiver import Receiver
from .channels import Deliver

__all__ = ["SQLiteChannel"]

log = logging.getLogger("shoal.cluster")

_PRUNE_EVERY = 64
_BATCH = 500


class SQLiteChannel:
    """Events of ``app_id`` in the ``shoal_events`` table of the database at ``path``."""

    name = "sqlite events table"

    def __init__(
        self, path: str, app_id: str, *, poll: float = 0.05, retention: int = 10_000
    ) -> None:
        self.path, self.app_id = path, app_id
        self.poll, self.retention = poll, retention
        self._local = threading.local()
        self._receiver: Receiver | None = None
        self.missed = 0  # events pruned before this listener read them

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():  # never a parent's connection
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            conn.execute(q.SQLITE_EVENTS_SCHEMA)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def publish(self, data: bytes) -> None:
        conn = self._conn()
        seq = conn.execute(q.SQLITE_EVENTS_INSERT, (self.app_id, data)).lastrowid or 0
        if seq % _PRUNE_EVERY == 0 and seq > self.retention:
            conn.execute(q.SQLITE_EVENTS_PRUNE, (seq - self.retention,))

    def start(self, deliver: Deliver) -> None:
        if self._receiver is not None:
            return
        start = self._conn().execute(q.SQLITE_EVENTS_LAST).fetchone()[0] or 0
        position = {"seq": start}

        def session(stop: threading.Event) -> None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            try:
                conn.execute(q.SQLITE_EVENTS_SCHEMA)
                seen_version = None
                while not stop.is_set():
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version != seen_version:
                        seen_version = version
                        self._read(conn, position, deliver)
                    stop.wait(self.poll)
            finally:
                conn.close()

        self._receiver = Receiver(f"sqlite:{self.app_id}", session)

    def _read(self, conn: sqlite3.Connection, position: dict[str, int], deliver: Deliver) -> None:
        first = conn.execute(q.SQLITE_EVENTS_FIRST).fetchone()[0]
        if first is not None and first > position["seq"] + 1:
            gap = first - position["seq"] - 1
            self.missed += gap
            log.warning(
                "events listener fell behind the %d events kept: %d events were "
                "pruned before it read them", self.retention, gap,
            )  # fmt: skip
            position["seq"] = first - 1
        while True:
            rows = conn.execute(q.SQLITE_EVENTS_READ, (position["seq"], _BATCH)).fetchall()
            for seq, app_id, data in rows:
                position["seq"] = seq
                if app_id == self.app_id:
                    deliver(bytes(data))
            if len(rows) < _BATCH:
                return

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
            self._local.conn = None
