"""The admin commands use a store that is there, and change nothing that is not theirs.

``ls``, ``show``, ``stats``, ``rm`` and ``purge`` pointed at something that is
not a session store (an application's SQLite file or PostgreSQL database, a
plain file, an unrelated directory, someone else's dbm) make no DDL and change
no setting, SQLite's journal mode included: they answer "not a session store"
in one line, exit 1. ``shoal migrate`` stays the one step that creates a schema.
"""

from __future__ import annotations

import dbm
import hashlib
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from shoal import SessionManager
from shoal.cli import main
from shoal.ids import hash_id
from tests.servers import MariaDBServer, PostgresServer
from tests.stores._sql import execute, mysql_connect

COMMANDS = {
    "ls": ["ls"],
    "show": ["show", "ab" * 32],
    "stats": ["stats"],
    "rm": ["rm", "ab" * 32],
    "rm-hard": ["rm", "--hard", "ab" * 32],
    "purge": ["purge"],
}


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--store", url, *args])


def assert_not_a_store(result: Result, shown_url: str, *, migrate: bool) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "not a session store" in result.stderr, result.stderr
    assert shown_url in result.stderr, result.stderr
    assert ("shoal migrate" in result.stderr) is migrate, result.stderr


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for a directory)."""
    found: dict[str, bytes | None] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(top, name), root)] = None
        for name in files:
            path = os.path.join(top, name)
            found[os.path.relpath(path, root)] = Path(path).read_bytes()
    return found


# -- SQLite -------------------------------------------------------------------------


def sqlite_state(path: Path) -> tuple[list[Any], str, str]:
    """(schema, journal mode, SHA-256 of the file) of the database at ``path``."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    conn = sqlite3.connect(path)
    try:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    return schema, mode, digest


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    """An application's own SQLite database (rollback journal): no shoal table."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('alice')")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_apps_sqlite_database_is_not_a_store_and_is_left_alone(
    app_db: Path, command: str
) -> None:
    before = sqlite_state(app_db)
    assert before[1] == "delete"
    result = run(f"sqlite://{app_db}", *COMMANDS[command])
    assert_not_a_store(result, f"sqlite://{app_db}", migrate=True)
    assert sqlite_state(app_db) == before, "no table, no index, journal mode unchanged"
    assert sorted(os.listdir(app_db.parent)) == ["app.db"], "no -wal or -shm file"


def test_migrate_is_the_deliberate_step(app_db: Path) -> None:
    result = run(f"sqlite://{app_db}", "migrate")
    assert result.exit_code == 0, result.output
    names = [row[1] for row in sqlite_state(app_db)[0]]
    assert "shoal_sessions" in names and "users" in names
    assert run(f"sqlite://{app_db}", "ls").exit_code == 0


@pytest.mark.parametrize(
    ("content", "migrate"),
    [
        # SQLite reads an empty file as an empty database: migrate could make it a store.
        pytest.param(b"", True, id="empty"),
        pytest.param(b"hello, not a database\n" * 10, False, id="text"),
    ],
)
def test_a_file_that_is_no_sqlite_database_is_not_a_store(
    tmp_path: Path, content: bytes, migrate: bool
) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    for command in ("ls", "stats", "purge"):
        assert_not_a_store(run(f"sqlite://{path}", command), f"sqlite://{path}", migrate=migrate)
    assert path.read_bytes() == content
    assert os.listdir(tmp_path) == ["notes.db"]


def test_a_store_in_rollback_journal_mode_stays_in_it(tmp_path: Path) -> None:
    """Even on a real store the commands switch no setting: WAL is the app's choice."""
    path = tmp_path / "sessions.db"
    manager = SessionManager(f"sqlite://{path}", app_id="shop")
    with manager.open() as session:
        session["user"] = "alice"
    manager.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    conn.close()
    schema = sqlite_state(path)[0]
    for command in (["ls"], ["stats"], ["show", session.id], ["purge"], ["rm", session.id]):
        result = run(f"sqlite://{path}", *command)
        assert result.exit_code == 0, result.output
        assert sqlite_state(path)[:2] == (schema, "delete"), command


# -- PostgreSQL and MariaDB -----------------------------------------------------------


def app_database(server_url: str, users_table: str, drop_options: str = "") -> Iterator[str]:
    """A fresh database on the server at ``server_url`` holding one application
    table (``CREATE TABLE users ...``); its URL, dropped afterwards."""
    name = f"app_{uuid.uuid4().hex[:10]}"
    execute(server_url, f"CREATE DATABASE {name}")
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    execute(url, f"CREATE TABLE users {users_table}")
    yield url
    execute(server_url, f"DROP DATABASE {name}{drop_options}")


@pytest.fixture
def pg_app(postgres_server: PostgresServer) -> Iterator[str]:
    yield from app_database(
        postgres_server.url, "(id serial PRIMARY KEY, name text)", " WITH (FORCE)"
    )


def pg_tables(url: str) -> list[tuple[str, str]]:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        indexes = conn.execute(
            "SELECT schemaname, indexname FROM pg_indexes "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
    return [*rows, *indexes]


def with_password(url: str) -> str:
    """``url`` with a password the trust-auth server ignores: it must be masked."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:hunter2@{host}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_apps_postgresql_database_is_not_a_store_and_is_left_alone(
    pg_app: str, command: str
) -> None:
    before = pg_tables(pg_app)
    result = run(with_password(pg_app), *COMMANDS[command])
    masked = with_password(pg_app).replace("hunter2", "***")
    assert_not_a_store(result, masked, migrate=True)
    assert "hunter2" not in result.output
    assert pg_tables(pg_app) == before


@pytest.fixture
def maria_app(mariadb_server: MariaDBServer) -> Iterator[str]:
    yield from app_database(mariadb_server.url, "(id INT PRIMARY KEY, name TEXT)")


def maria_tables(url: str) -> list[Any]:
    conn = mysql_connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT table_name, index_name FROM information_schema.statistics "
                "WHERE table_schema = DATABASE() UNION "
                "SELECT table_name, '' FROM information_schema.tables "
                "WHERE table_schema = DATABASE() ORDER BY 1, 2"
            )
            return list(cursor.fetchall())
    finally:
        conn.close()


@pytest.mark.parametrize("command", ["ls", "show", "purge"])
def test_an_apps_mariadb_database_is_not_a_store_and_is_left_alone(
    maria_app: str, command: str
) -> None:
    before = maria_tables(maria_app)
    result = run(maria_app, *COMMANDS[command])
    assert_not_a_store(result, maria_app, migrate=True)
    assert maria_tables(maria_app) == before


# -- file:// --------------------------------------------------------------------------


def test_a_plain_file_is_not_a_file_store(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    for command in sorted(COMMANDS):
        assert_not_a_store(run(f"file://{path}", *COMMANDS[command]), str(path), migrate=False)
    assert tree(tmp_path) == {"notes.txt": b"hello\n"}


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param({"README.md": b"# project\n", "src/app.py": b"print()\n"}, id="project"),
        pytest.param({"bin/tool": b"#!/bin/sh\n", "lib/libx.so": b"\x7fELF"}, id="only-dirs"),
    ],
)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unrelated_directory_is_not_a_file_store(
    tmp_path: Path, layout: dict[str, bytes], command: str
) -> None:
    root = tmp_path / "somewhere"
    for name, content in layout.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    before = tree(root)
    assert_not_a_store(run(f"file://{root}", *COMMANDS[command]), str(root), migrate=False)
    assert tree(root) == before


def test_an_empty_directory_is_an_empty_file_store(tmp_path: Path) -> None:
    result = run(f"file://{tmp_path}", "ls")
    assert result.exit_code == 0, result.output
    assert "0 live sessions" in result.stdout
    assert tree(tmp_path) == {}


def test_a_file_store_is_recognised_and_left_as_it_was(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'sessions'}"
    manager = SessionManager(url, app_id="shop")
    with manager.open() as session:
        session["user"] = "alice"
    manager.close()
    (tmp_path / "sessions" / ".snapshot").mkdir()  # what an NFS server may show
    before = tree(tmp_path)
    listed = run(url, "ls", "--json")
    assert listed.exit_code == 0, listed.output
    assert [row["id_hash"] for row in orjson.loads(listed.stdout)] == [hash_id(session.id)]
    assert run(url, "stats").exit_code == 0
    assert tree(tmp_path) == before


# -- dbm:// ---------------------------------------------------------------------------


def test_a_plain_file_is_not_a_dbm_store(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    for command in ("ls", "stats", "purge", "show"):
        argv = COMMANDS[command]
        assert_not_a_store(run(f"dbm://{path}", *argv), str(path), migrate=False)
    assert tree(tmp_path) == {"notes.txt": b"hello\n"}


def test_someone_elses_dbm_is_not_a_dbm_store(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    with dbm.open(str(path), "c") as database:
        database[b"user:1"] = b"alice"
    before = tree(tmp_path)
    for command in ("ls", "stats", "purge"):
        assert_not_a_store(run(f"dbm://{path}", command), str(path), migrate=False)
    assert tree(tmp_path) == before
