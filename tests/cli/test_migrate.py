"""``shoal migrate``: the schema created ahead of the first request, on real servers."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from shoal.cli import main
from tests.servers import MariaDBServer, PostgresServer
from tests.stores._sql import execute


def migrate(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["migrate", "--store", url, *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("server", ["postgres_server", "mariadb_server"])
def test_migrate_creates_the_table_once_and_again(
    server: str, request: pytest.FixtureRequest
) -> None:
    running: PostgresServer | MariaDBServer = request.getfixturevalue(server)
    table = f"migrated_{uuid.uuid4().hex[:8]}"
    url = f"{running.url}?table={table}"
    try:
        code, out = migrate(url)
        assert code == 0, out
        assert "schema" in out and "in place" in out
        # The table exists: a statement on it succeeds (it fails on a missing table).
        execute(running.url, f"DELETE FROM {table}")
        code, out = migrate(url, "--json")  # repeating is harmless
        assert code == 0, out
        assert orjson.loads(out)["migrated"] is True
    finally:
        execute(running.url, f"DROP TABLE IF EXISTS {table}")


def test_migrate_creates_a_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "new" / "sessions.db"
    code, out = migrate(f"sqlite://{path}")
    assert code == 0, out
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert ("shoal_sessions",) in tables


def test_migrate_of_a_store_without_schema_says_so() -> None:
    code, out = migrate("memory://")
    assert code == 0, out
    assert "nothing to migrate" in out
