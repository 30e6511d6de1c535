"""Admin commands pointed at a local store that does not exist create nothing.

A mistyped ``--store`` path, or a shell without ``$SHOAL_STORE``, must be told
apart from an empty store: one line naming the path and the fix, exit 1, and
no file or directory left behind where nothing was.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from shoal import SessionManager
from shoal.cli import main
from shoal.ids import hash_id

# kind -> the URL of a store at ``path`` (which names a file or, for file://, a directory)
KINDS = {
    "sqlite": lambda path: f"sqlite://{path}",
    "file": lambda path: f"file://{path}",
    "dbm": lambda path: f"dbm://{path}",
}

COMMANDS = {
    "ls": ["ls"],
    "show": ["show", "ab" * 32],
    "stats": ["stats"],
    "rm": ["rm", "ab" * 32],
    "rm-hard": ["rm", "--hard", "ab" * 32],
    "purge": ["purge"],
}


def tree(root: Path) -> list[str]:
    """Every path under ``root``, relative to it."""
    return sorted(
        os.path.relpath(os.path.join(top, name), root)
        for top, dirs, files in os.walk(root)
        for name in (*dirs, *files)
    )


def assert_no_store(result: Result, path: Path) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "no session store" in result.stderr and str(path) in result.stderr
    assert "--store" in result.stderr, "the message names the fix"


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("depth", ["missing-dir", "missing-file"])
def test_a_store_that_does_not_exist_is_an_error_and_creates_nothing(
    tmp_path: Path, kind: str, command: str, depth: str
) -> None:
    path = tmp_path / "wrong" / "path" / "sessions" if depth == "missing-dir" else (
        tmp_path / "sessions"
    )
    result = CliRunner().invoke(main, ["--store", KINDS[kind](path), *COMMANDS[command]])
    assert_no_store(result, path)
    assert tree(tmp_path) == [], "nothing was created"


def test_a_relative_sqlite_path_is_checked_where_the_store_would_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--store", "sqlite:sessions.db", "ls"])
    assert result.exit_code == 1 and "sessions.db" in result.stderr
    assert tree(tmp_path) == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_existing_store_is_opened(tmp_path: Path, kind: str) -> None:
    """The check only refuses what is missing: a store with one session lists it."""
    url = KINDS[kind](tmp_path / "sessions")
    manager = SessionManager(url, app_id="shop")
    with manager.open() as session:
        session["user"] = "alice"
    manager.close()
    result = CliRunner().invoke(main, ["--store", url, "ls", "--json"])
    assert result.exit_code == 0, result.output
    assert [row["id_hash"] for row in orjson.loads(result.stdout)] == [hash_id(session.id)]
    for command in (["stats"], ["purge"], ["rm", session.id]):
        assert CliRunner().invoke(main, ["--store", url, *command]).exit_code == 0


def test_the_missing_default_store_names_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOAL_STORE", raising=False)
    monkeypatch.setenv("SHOAL_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["ls"])
    assert_no_store(result, tmp_path / "data" / "sessions.db")
    assert "SHOAL_STORE" in result.stderr
    assert tree(tmp_path) == []
