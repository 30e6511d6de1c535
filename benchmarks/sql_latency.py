"""Per-request latency of shoal on PostgreSQL and SQLite, beside the raw floor.

Not a test: a script that prints a table. One request = load a session,
change one key, save it; the session holds about 500 bytes. For each store
it measures, in the same run and on the same database:

- shoal through ``SessionManager.open`` (policies ``merge`` and
  ``serialized``; the store as ``open_store`` builds it, breaker included);
- the raw floor: one SELECT and one UPSERT of the same 500 bytes by key
  (psycopg / sqlite3 directly, autocommit, the same prepare threshold);
- Django's database session backend (``django.contrib.sessions.backends.db``)
  on the same database, as the peer, when Django is installed.

It prints the median and p90 of one request, the ratio of medians to the
floor, and the statements each request sent (a counting cursor for
PostgreSQL; the SQLite trace callback; Django's captured queries, which do
not show the BEGIN/COMMIT its atomic() adds).

    python benchmarks/sql_latency.py                 # private PostgreSQL + SQLite
    python benchmarks/sql_latency.py --pg-url postgresql://u@host/db --requests 5000

Without ``--pg-url`` it starts a private PostgreSQL (tests/servers, as the
tests do: fsync and synchronous_commit off, so both shoal and the floor
measure round trips and CPU, not the disk).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _peers  # noqa: E402
from benchmarks._timing import (  # noqa: E402
    PAYLOAD,
    SESSION,
    Counter,
    Request,
    Row,
    interleave,
    print_table,
)
from shoal import SessionManager  # noqa: E402
from shoal.stores._breaker import BreakerStore, breaker_for  # noqa: E402
from shoal.stores.base import Store  # noqa: E402
from shoal.stores.sqlite import SQLiteStore  # noqa: E402

FLOOR = "floor SELECT+UPSERT"


# -- shoal -----------------------------------------------------------------------


def shoal_request(manager: SessionManager, sid: str) -> Callable[[int], None]:
    def request(i: int) -> None:
        with manager.open(sid) as session:
            session["visits"] = i

    return request


def new_session(manager: SessionManager) -> str:
    with manager.open() as session:
        session.update(SESSION)
    return session.id


def manager_on(store: Store, policy: str) -> SessionManager:
    # touch_interval as the default (60 s): no request here is due a touch.
    return SessionManager(store, app_id=f"bench-{policy}", policy=policy)


# -- PostgreSQL --------------------------------------------------------------------


def counting_cursor() -> type:
    import psycopg

    class CountingCursor(psycopg.Cursor[Any]):
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            if Counter.on:
                Counter.count += 1
            return super().execute(*args, **kwargs)

    return CountingCursor


def pg_store(url: str) -> Store:
    from urllib.parse import urlsplit, urlunsplit

    from shoal.stores.postgresql import PostgresStore

    parts = urlsplit(url)
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, "", ""))
    table = f"bench_{uuid.uuid4().hex[:8]}"
    inner = PostgresStore(
        conninfo, url=url, table=table, min_size=1, max_size=2,
        connect_kwargs={"cursor_factory": counting_cursor()},
    )
    return BreakerStore(inner, breaker_for(f"{url}#bench"))


def pg_floor(url: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    import psycopg

    conn = psycopg.connect(url, autocommit=True, cursor_factory=counting_cursor())
    table = f"floor_{uuid.uuid4().hex[:8]}"
    conn.execute(
        f"CREATE TABLE {table} (app_id text, id_hash text, data bytea NOT NULL,"
        " PRIMARY KEY (app_id, id_hash))"
    )
    select = f"SELECT data FROM {table} WHERE app_id = %s AND id_hash = %s"
    upsert = (
        f"INSERT INTO {table} (app_id, id_hash, data) VALUES (%s, %s, %s)"
        " ON CONFLICT (app_id, id_hash) DO UPDATE SET data = excluded.data"
    )
    key = ("bench", "f" * 64)
    conn.execute(upsert, (*key, PAYLOAD))

    def request(i: int) -> None:
        row = conn.execute(select, key).fetchone()
        assert row is not None
        conn.execute(upsert, (*key, bytes(row[0])[:-4] + i.to_bytes(4, "big")))

    def cleanup() -> None:
        conn.execute(f"DROP TABLE {table}")
        conn.close()

    return request, cleanup


# -- SQLite ------------------------------------------------------------------------


def sqlite_floor(path: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    return _peers.floor_sqlite(path, "NORMAL", on_connect=count_statements)


def count_statements(conn: sqlite3.Connection) -> None:
    """Count the connection's statements, by its trace callback, while counting is on."""

    def switch(on: bool) -> None:
        hook = (lambda _: setattr(Counter, "count", Counter.count + 1)) if on else None
        conn.set_trace_callback(hook)

    Counter.switches.append(switch)


def count_sqlite_statements(store: SQLiteStore) -> None:
    """Count the statements of this thread's connection of the store."""
    count_statements(store._conn())


# -- Django ------------------------------------------------------------------------


class DjangoPeer(_peers.DjangoPeer):
    """Django's db session backend, on the database alias chosen by ``request_on()``,
    its queries counted per request."""

    def __init__(self, sqlite_path: str, pg_url: str | None) -> None:
        super().__init__(sqlite_path, pg_url, None)

    def request_on(self, alias: str) -> Callable[[int], None]:
        from django.contrib.sessions.backends.db import SessionStore  # type: ignore[import-untyped,unused-ignore]
        from django.db import connections  # type: ignore[import-untyped,unused-ignore]

        self.alias = alias
        first = SessionStore()
        first.update(SESSION)
        first.save()
        key = first.session_key
        conn = connections[alias]
        Counter.switches.append(lambda on: setattr(conn, "force_debug_cursor", on))

        def request(i: int) -> None:
            self.alias = alias  # the variants interleave: route this request's queries
            session = SessionStore(key)
            session["visits"] = i  # loads (one SELECT), then marks it modified
            session.save()
            Counter.count += len(conn.queries_log)
            conn.queries_log.clear()

        return request


# -- the run -----------------------------------------------------------------------


@contextmanager
def postgres(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from tests.servers import PostgresServer

    with PostgresServer() as server:
        yield server.url


def run(args: argparse.Namespace) -> dict[str, list[Row]]:
    """Per store, its variants interleaved request by request (see ``_timing``)."""
    tables: dict[str, list[Row]] = {}
    warmup = max(50, args.requests // 10)
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="shoal-bench-"))
        pg_url = stack.enter_context(postgres(args.pg_url)) if not args.no_postgres else None
        try:
            peer: DjangoPeer | None = DjangoPeer(os.path.join(tmp, "django.db"), pg_url)
        except ImportError:
            peer = None
            print("  (Django is not installed: pip install 'shoal[bench]'; peer skipped)")

        if pg_url is not None:
            request, cleanup = pg_floor(pg_url)
            stack.callback(cleanup)
            store = pg_store(pg_url)
            stack.callback(store.close)
            variants: dict[str, Request] = {FLOOR: request}
            for policy in ("merge", "serialized"):
                manager = manager_on(store, policy)
                variants[f"shoal {policy}"] = shoal_request(manager, new_session(manager))
            if peer is not None:
                variants["django db backend"] = peer.request_on("pg")
            tables["postgresql"] = interleave(
                variants, args.requests, warmup, rounds=args.rounds, label="postgresql "
            )

        path = os.path.join(tmp, "shoal.db")
        request, cleanup = sqlite_floor(os.path.join(tmp, "floor.db"))
        stack.callback(cleanup)
        sqlite_store = SQLiteStore(path)
        stack.callback(sqlite_store.close)
        variants = {FLOOR: request}
        for policy in ("merge", "serialized"):
            manager = manager_on(sqlite_store, policy)
            variants[f"shoal {policy}"] = shoal_request(manager, new_session(manager))
        count_sqlite_statements(sqlite_store)
        if peer is not None:
            variants["django db backend"] = peer.request_on("default")
        tables["sqlite"] = interleave(
            variants, args.requests, warmup, rounds=args.rounds, label="sqlite "
        )
    return tables


def report(tables: dict[str, list[Row]]) -> None:
    for store, rows in tables.items():
        print_table(rows, floor=FLOOR, sent="stmts/req", title=store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-url", help="an existing PostgreSQL (default: a private one)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--requests", type=int, default=2000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of interleaved requests")
    report(run(parser.parse_args()))


if __name__ == "__main__":
    main()
