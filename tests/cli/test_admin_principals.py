"""``shoal ls/kill --principal``, ``stats`` distribution, ``purge`` progress, ``shoal copy``.

On real SQLite stores through click's runner; sessions are made by a
``SessionManager`` (logins set ``session.principal``), so the CLI reads
exactly what an application writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from shoal import ManualClock, SessionManager
from shoal.cli import main
from shoal.cli._copy import COPY_MARK
from shoal.ids import hash_id
from shoal.stores import open_store
from shoal.stores.base import LoadStatus, RecordKey


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'sessions.db'}"


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--store", url, *args])


def run_json(url: str, *args: str) -> Any:
    result = run(url, *args, "--json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def login(url: str, user: str | None, *, app_id: str = "shop", age: float = 0.0,
          data: dict[str, Any] | None = None) -> str:  # fmt: skip
    manager = SessionManager(url, app_id=app_id, clock=ManualClock(start=time.time() - age))
    try:
        with manager.open() as session:
            session.update(data or {"cart": ["book"]})
            if user is not None:
                session.principal = user
        return session.id
    finally:
        manager.close()


def status(url: str, sid: str, app_id: str = "shop") -> LoadStatus:
    store = open_store(url)
    try:
        return store.load(RecordKey(app_id, hash_id(sid)), now=time.time()).status
    finally:
        store.close()


# -- ls / kill --principal ----------------------------------------------------------


def test_ls_principal_lists_only_that_users_live_sessions(url: str) -> None:
    phone, laptop = login(url, "ada", age=60), login(url, "ada")
    login(url, "bob")
    blog = login(url, "ada", app_id="blog")
    rows = run_json(url, "ls", "--principal", "ada")
    assert {row["id_hash"] for row in rows} == {hash_id(s) for s in (phone, laptop, blog)}
    assert {row["principal"] for row in rows} == {"ada"}
    only = run_json(url, "ls", "--principal", "ada", "--app-id", "blog")
    assert [row["id_hash"] for row in only] == [hash_id(blog)]
    table = run(url, "ls", "--principal", "ada")
    assert table.exit_code == 0 and "3 live sessions of 'ada'" in table.stdout
    assert run_json(url, "ls", "--principal", "nobody") == []
    assert run(url, "ls", "--principal", "ada", "--all").exit_code == 2


def test_plain_ls_and_stats_leave_the_index_out(url: str) -> None:
    sid = login(url, "ada")
    assert [row["id_hash"] for row in run_json(url, "ls", "--all")] == [hash_id(sid)]
    assert [row["app_id"] for row in run_json(url, "stats")] == ["shop"]


def test_kill_principal_ends_every_session_of_the_user(url: str) -> None:
    ada = [login(url, "ada"), login(url, "ada"), login(url, "ada", app_id="blog")]
    bob = login(url, "bob")
    out = run_json(url, "kill", "--principal", "ada")
    assert out["principal"] == "ada" and out["ended"] == 3
    assert {s["id_hash"] for s in out["sessions"]} == {hash_id(s) for s in ada}
    assert status(url, ada[0]) is LoadStatus.INVALIDATED
    assert status(url, ada[2], "blog") is LoadStatus.INVALIDATED
    assert status(url, bob) is LoadStatus.LOADED
    assert run_json(url, "ls", "--principal", "ada") == []
    again = run(url, "kill", "--principal", "ada")
    assert again.exit_code == 0 and "ended 0 sessions of 'ada'" in again.stdout
    assert run(url, "kill").exit_code == 2  # --principal is required


def test_kill_principal_within_one_app(url: str) -> None:
    shop, blog = login(url, "ada"), login(url, "ada", app_id="blog")
    assert run_json(url, "kill", "--principal", "ada", "--app-id", "blog")["ended"] == 1
    assert status(url, blog, "blog") is LoadStatus.INVALIDATED
    assert status(url, shop) is LoadStatus.LOADED


# -- stats --------------------------------------------------------------------------


def test_stats_size_distribution_and_expiring_soon(url: str) -> None:
    for size in (10, 20, 30, 40, 1000):
        login(url, None, data={"pad": "x" * size})
    login(url, None, age=1800 - 100)  # idle timeout 1800 s: ends in 100 s
    (row,) = run_json(url, "stats")
    assert row["live"] == 6 and row["expiring_soon"] == 1 and row["soon"] == 300.0
    dist = row["size_distribution"]
    assert dist["max"] > 1000 and dist["p50"] < 100 < dist["max"]
    assert dist["p50"] <= dist["p90"] <= dist["p99"] <= dist["max"]
    assert run_json(url, "stats", "--soon", "50")[0]["expiring_soon"] == 0
    table = run(url, "stats")
    assert table.exit_code == 0 and "p90" in table.stdout and "soon" in table.stdout


def test_stats_distribution_of_no_live_session_is_empty(url: str) -> None:
    login(url, None, age=1800 + 10)
    (row,) = run_json(url, "stats")
    assert row["live"] == 0
    assert row["size_distribution"] == {"p50": None, "p90": None, "p99": None, "max": None}


# -- purge progress -----------------------------------------------------------------


def test_purge_shows_a_progress_bar_on_a_terminal_only(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        login(url, None, age=1800 + 1000)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TTY_INTERACTIVE", "0")
    result = run(url, "purge", "--batch", "2")
    assert result.exit_code == 0, result.output
    assert "purging" in result.stderr and "3/3" in result.stderr
    assert "purged 3 records" in result.stdout
    login(url, None, age=1800 + 1000)
    quiet = run(url, "purge", "--json")
    assert quiet.stderr == "" and orjson.loads(quiet.stdout)["purged"] == 1


# -- copy ---------------------------------------------------------------------------


def test_copy_moves_live_sessions_tombstones_and_the_index(url: str, tmp_path: Path) -> None:
    target = f"sqlite://{tmp_path / 'target.db'}"
    ada = login(url, "ada", data={"cart": ["book", "pen"]})
    ended = login(url, None)
    run(url, "rm", ended)
    login(url, None, age=1800 + 10)  # expired: not copied
    out = run_json(url, "copy", "--from", url, "--to", target)
    # ada's session, her user index record (not a session: counted apart), a tombstone
    assert (out["copied"], out["index"], out["ended"], out["settled"]) == (1, 1, 1, True)
    manager = SessionManager(target, app_id="shop")
    try:
        with manager.open(ada) as session:
            assert not session.is_new and session["cart"] == ["book", "pen"]
            assert session.principal == "ada" and COPY_MARK not in session
            assert dict(session) == {"cart": ["book", "pen"]}
        assert [i.key.id_hash for i in manager.sessions_of("ada")] == [hash_id(ada)]
        with manager.open(ended) as gone:
            assert gone.is_new  # the tombstone came along: no replica revives it there
    finally:
        manager.close()
    again = run_json(url, "copy", "--from", url, "--to", target)
    assert (again["copied"], again["ended"], again["unchanged"]) == (0, 0, 3)
    again_text = run(url, "copy", "--from", url, "--to", f"sqlite://{tmp_path / 'other.db'}")
    assert again_text.stdout.startswith(
        "copied 1 session, 1 user index record and 1 tombstone from "
    ), again_text.stdout


def test_copy_brings_newer_versions_and_keeps_the_targets_own_writes(
    url: str, tmp_path: Path
) -> None:
    target = f"sqlite://{tmp_path / 'target.db'}"
    changed, theirs = login(url, None), login(url, None)
    run_json(url, "copy", "--from", url, "--to", target)
    source, moved = SessionManager(url, app_id="shop"), SessionManager(target, app_id="shop")
    try:
        with source.open(changed) as session:
            session["cart"] = ["newer"]
        with source.open(theirs) as session:
            session["cart"] = ["source"]
        # Written on the target by an app that already moved: its version is its own.
        with moved.open(theirs) as session:  # the app's own write, after its switch
            session["cart"] = ["target"]
        out = run_json(url, "copy", "--from", url, "--to", target)
        assert (out["copied"], out["target_newer"]) == (1, 1)
        with moved.open(changed) as session:
            assert session["cart"] == ["newer"]
        with moved.open(theirs) as session:
            assert session["cart"] == ["target"]
    finally:
        source.close()
        moved.close()


def test_copy_refuses_one_store_twice_and_a_missing_source(url: str, tmp_path: Path) -> None:
    assert run(url, "copy", "--from", url, "--to", url).exit_code == 2
    missing = f"sqlite://{tmp_path / 'nope.db'}"
    result = run(url, "copy", "--from", missing, "--to", url)
    assert result.exit_code == 1 and "no session store" in result.stderr


def test_copy_shows_a_progress_bar_per_pass_on_a_terminal(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        login(url, None)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TTY_INTERACTIVE", "0")
    result = run(url, "copy", "--from", url, "--to", f"sqlite://{tmp_path / 'target.db'}")
    assert result.exit_code == 0, result.output
    assert "copying, pass 2" in result.stderr and "3/3" in result.stderr
    assert "copied 3 sessions and 0 tombstones" in result.stdout and "2 passes" in result.stdout
