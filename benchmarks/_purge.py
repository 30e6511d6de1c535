"""Purging many expired sessions on SQLite and PostgreSQL, with requests running meanwhile.

``sessions`` expired records (expired an hour ago, past any grace) are
inserted straight into the store's table (SQL ``executemany`` /
``generate_series``: filling is not what is measured), beside one live
session. Then ``store.purge`` runs in batches of ``BATCH`` until it finds
nothing, while a second thread runs shoal requests (load, change one key,
save) on the live session. Reported: the purge's total time and rate, and
the median and p99 of the concurrent requests, beside the same requests
with no purge running.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

from benchmarks._timing import SESSION
from shoal import SessionManager
from shoal.stores import open_store

__all__ = ["PurgeResult", "run_purge"]

BATCH = 10_000


@dataclass
class PurgeResult:
    store: str
    sessions: int
    purged: int
    seconds: float
    idle_median_us: float
    idle_p99_us: float
    during_median_us: float
    during_p99_us: float


def _fill_sqlite(path: str, n: int, expires: float) -> None:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO shoal_sessions (app_id, id_hash, version, created, accessed, expires,"
        " absolute_expires, fields) VALUES ('old', ?, 1, ?, ?, ?, ?, x'00')",
        ((f"{i:064x}", expires - 600, expires - 600, expires, expires) for i in range(n)),
    )
    conn.execute("COMMIT")
    conn.close()


def _fill_postgres(url: str, table: str, n: int, expires: float) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {table} (app_id, id_hash, version, created, accessed, expires,"
            " absolute_expires, fields) SELECT 'old', lpad(to_hex(i), 64, '0'), 1, %s, %s,"
            " %s, %s, '{}'::jsonb FROM generate_series(1, %s) AS i",
            (expires - 600, expires - 600, expires, expires, n),
        )


def _requests(manager: SessionManager, sid: str, stop: threading.Event, limit: int) -> list[float]:
    times: list[float] = []
    deadline = time.monotonic() + 600
    while not stop.is_set() and len(times) < limit and time.monotonic() < deadline:
        started = time.perf_counter()
        with manager.open(sid) as session:
            session["visits"] = len(times)
        times.append(time.perf_counter() - started)
    return times


def _one(kind: str, url: str, fill: Any, sessions: int) -> PurgeResult:
    store = open_store(url)
    try:
        manager = SessionManager(store, app_id="purge-live", policy="merge")
        with manager.open() as session:
            session.update(SESSION)
        sid = session.id
        fill(sessions, time.time() - 3600)
        idle = _requests(manager, sid, threading.Event(), 300)
        stop = threading.Event()
        during: list[float] = []
        worker = threading.Thread(
            target=lambda: during.extend(_requests(manager, sid, stop, 10**9)), daemon=True
        )
        worker.start()
        started = time.perf_counter()
        purged = 0
        for _ in range(sessions // BATCH + 10):  # bounded: each batch deletes or ends it
            deleted = store.purge(now=time.time(), grace=120, limit=BATCH)
            purged += deleted
            if deleted == 0:
                break
        seconds = time.perf_counter() - started
        stop.set()
        worker.join(timeout=60)
        during = during or [0.0]

        def p99(xs: list[float]) -> float:
            return statistics.quantiles(xs, n=100)[-1] if len(xs) > 1 else xs[0]

        return PurgeResult(kind, sessions, purged, seconds,
                           statistics.median(idle) * 1e6, p99(idle) * 1e6,
                           statistics.median(during) * 1e6, p99(during) * 1e6)  # fmt: skip
    finally:
        store.close()


def run_purge(tmp: str, pg_url: str | None, sessions: int) -> list[PurgeResult]:
    results = []
    path = os.path.join(tmp, "purge.db")
    sqlite_url = f"sqlite://{path}"
    open_store(sqlite_url).close()  # creates the table
    results.append(_one("SQLite", sqlite_url, lambda n, e: _fill_sqlite(path, n, e), sessions))
    if pg_url is not None:
        table = f"purge_{os.getpid()}"
        url = pg_url + ("&" if "?" in pg_url else "?") + f"table={table}"
        probe: Any = open_store(url)
        probe.migrate() if hasattr(probe, "migrate") else None
        probe.close()
        results.append(_one("PostgreSQL", url,
                            lambda n, e: _fill_postgres(pg_url, table, n, e), sessions))  # fmt: skip
    for r in results:
        print(f"  {r.store:<11} purged {r.purged}/{r.sessions} in {r.seconds:.1f}s "
              f"({r.purged / max(r.seconds, 1e-9):,.0f}/s); requests meanwhile median "
              f"{r.during_median_us:.0f} us p99 {r.during_p99_us:.0f} us (idle: median "
              f"{r.idle_median_us:.0f} us p99 {r.idle_p99_us:.0f} us)", flush=True)
    return results
