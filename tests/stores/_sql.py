"""What the SQL store tests of this package share: a record builder, tables, blockers.

PostgreSQL through psycopg, MySQL/MariaDB through PyMySQL, chosen by the
server URL's scheme. The drivers are imported when used, so the module
imports without the extras.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from shoal.stores.base import NewRecord, RecordKey

__all__ = ["IDLE", "KEY", "NOW", "Counting", "execute", "fresh_table", "mysql_connect", "new",
           "quote", "rows_locked"]

NOW = float(int(time.time()))
IDLE = 600.0
KEY = RecordKey("app", "c" * 64)


def new(fields: dict[str, bytes] | None = None) -> NewRecord:
    return NewRecord(NOW, NOW + IDLE, NOW + 10 * IDLE, fields or {})


class Counting:
    """A cursor mixin that counts ``execute`` calls, on the class (every connection's).

    ``class CountingCursor(Counting, driver.Cursor)``; ``CountingCursor.calls(f)``
    is how many statements ``f()`` sent.
    """

    executed = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        type(self).executed += 1
        return super().execute(*args, **kwargs)  # type: ignore[misc]

    @classmethod
    def calls(cls, action: Callable[[], object]) -> int:
        before = cls.executed
        action()
        return cls.executed - before


def _postgres(url: str) -> bool:
    return url.startswith(("postgresql:", "postgres:"))


def quote(url: str, name: str) -> str:
    """``name`` as an identifier of the server at ``url``."""
    return f'"{name}"' if _postgres(url) else f"`{name}`"


def mysql_connect(url: str) -> Any:
    """A PyMySQL connection (autocommit) to the MariaDB at ``url``."""
    import pymysql

    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname, port=parts.port or 3306, user=parts.username,
        database=parts.path.lstrip("/"), autocommit=True, connect_timeout=5, read_timeout=30,
    )


def execute(url: str, statement: str) -> None:
    """Run one statement on its own autocommit connection."""
    if _postgres(url):
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(statement)
        return
    conn = mysql_connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()


def fresh_table(url: str) -> Iterator[str]:
    """A table name nobody used yet; the table is dropped afterwards (for a fixture)."""
    name = f"s_{uuid.uuid4().hex[:10]}"
    yield name
    execute(url, f"DROP TABLE IF EXISTS {quote(url, name)}")


@contextlib.contextmanager
def rows_locked(url: str, table: str) -> Iterator[None]:
    """Every row of ``table`` locked by another transaction until the block ends."""
    lock_all = f"SELECT 1 FROM {quote(url, table)} FOR UPDATE"
    if _postgres(url):
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as blocker:
            blocker.execute(lock_all)  # held until the rollback
            try:
                yield
            finally:
                blocker.rollback()
        return
    blocker = mysql_connect(url)
    try:
        with blocker.cursor() as cursor:
            cursor.execute("START TRANSACTION")
            cursor.execute(lock_all)
        yield
    finally:
        blocker.close()  # rolls back, freeing the rows


@contextlib.contextmanager
def table_locked(url: str, table: str) -> Iterator[Callable[[], None]]:
    """``table`` locked against DDL by another session; the block gets the release."""
    if _postgres(url):
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as blocker:
            blocker.execute(f"LOCK TABLE {quote(url, table)} IN ACCESS EXCLUSIVE MODE")
            yield blocker.rollback
        return
    blocker = mysql_connect(url)
    try:
        with blocker.cursor() as cursor:
            cursor.execute(f"LOCK TABLES {quote(url, table)} WRITE")
        yield blocker.close
    finally:
        if blocker.open:
            blocker.close()
