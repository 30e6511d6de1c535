"""``shoal ls | show | rm | purge | stats`` on a real SQLite store, through click's runner.

Sessions are made by a ``SessionManager`` whose ``ManualClock`` starts in the
past, so a session is live, expired or long expired by thousands of seconds
against the real time the CLI uses: no sleeping, no tight margins.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

import shoal.cli
from shoal import ManualClock, SessionManager
from shoal.cli import main
from shoal.ids import hash_id
from shoal.stores import open_store
from shoal.stores.base import NewRecord, RecordKey

IDLE = 1800.0  # SessionManager's default idle timeout


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'sessions.db'}"  # sqlite:///abs/path


def make_session(
    url: str, *, app_id: str = "shop", age: float = 0.0, data: dict[str, Any] | None = None
) -> str:
    """A stored session created ``age`` seconds ago (and idle since); its raw id."""
    manager = SessionManager(url, app_id=app_id, clock=ManualClock(start=time.time() - age))
    try:
        with manager.open() as session:
            session.update(data or {"user": "alice"})
        return session.id
    finally:
        manager.close()


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--store", url, *args])


def run_json(url: str, *args: str) -> Any:
    result = run(url, *args, "--json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def assert_one_line_error(result: Result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


# -- ls -----------------------------------------------------------------------------


def test_ls_lists_live_sessions_most_recent_first(url: str) -> None:
    ids = [make_session(url, age=age) for age in (300, 0, 100)]
    result = run(url, "ls")
    assert result.exit_code == 0, result.output
    for sid in ids:
        assert hash_id(sid)[:16] in result.stdout
    assert "live" in result.stdout
    listed = run_json(url, "ls")
    assert [row["id_hash"] for row in listed] == [hash_id(ids[i]) for i in (1, 2, 0)]
    assert {row["state"] for row in listed} == {"live"}
    assert {row["app_id"] for row in listed} == {"shop"}
    assert all(row["size"] > 0 and row["version"] == 1 for row in listed)


def test_ls_all_shows_expired_and_tombstones(url: str) -> None:
    live = make_session(url)
    expired = make_session(url, age=IDLE + 1000)
    ended = make_session(url)
    assert run(url, "rm", ended).exit_code == 0
    assert [row["id_hash"] for row in run_json(url, "ls")] == [hash_id(live)]
    states = {row["id_hash"]: row["state"] for row in run_json(url, "ls", "--all")}
    assert states == {
        hash_id(live): "live",
        hash_id(expired): "expired",
        hash_id(ended): "invalidated",
    }


def test_ls_filters_by_app_and_limits(url: str) -> None:
    make_session(url, app_id="shop", age=10)
    blog = make_session(url, app_id="blog")
    assert {row["app_id"] for row in run_json(url, "ls")} == {"shop", "blog"}
    assert [row["id_hash"] for row in run_json(url, "--app-id", "blog", "ls")] == [hash_id(blog)]
    assert [row["id_hash"] for row in run_json(url, "ls", "--app-id", "blog")] == [hash_id(blog)]
    assert [row["id_hash"] for row in run_json(url, "ls", "--limit", "1")] == [hash_id(blog)]


def test_store_from_the_environment_and_after_the_command(url: str) -> None:
    sid = make_session(url)
    from_env = CliRunner(env={"SHOAL_STORE": url}).invoke(main, ["ls", "--json"])
    assert [row["id_hash"] for row in orjson.loads(from_env.stdout)] == [hash_id(sid)]
    after = CliRunner().invoke(main, ["ls", "--json", "--store", url])
    assert [row["id_hash"] for row in orjson.loads(after.stdout)] == [hash_id(sid)]


def test_ls_on_an_empty_memory_store() -> None:
    assert run_json("memory://", "ls") == []
    result = run("memory://", "ls")
    assert result.exit_code == 0
    assert "0 live sessions" in result.stdout


# -- show ---------------------------------------------------------------------------


def test_show_by_raw_id_hash_and_prefix(url: str) -> None:
    sid = make_session(url, data={"user": "alice", "cart": ["apple", "pear"]})
    make_session(url, data={"user": "bob"})
    full = hash_id(sid)
    for ident in (sid, full, full[:8], full[:20].upper()):
        result = run(url, "show", ident)
        assert result.exit_code == 0, result.output
        assert full in result.stdout
        assert "alice" in result.stdout and "'pear'" in result.stdout
        assert "live" in result.stdout
        assert sid not in result.stdout  # the raw id is a secret: never printed


@pytest.mark.parametrize("dashes", ["-", "--"])
def test_a_raw_id_may_start_with_dashes(url: str, dashes: str) -> None:
    """One raw id in 64 starts with "-": it is still a session id, not an option."""
    sid = dashes + "Ab1_" * 10 + "xyz"[: 43 - len(dashes) - 40]
    manager = SessionManager(url, app_id="shop", id_factory=lambda: sid)
    with manager.open() as session:
        session["user"] = "alice"
    manager.close()
    assert session.id == sid
    shown = run(url, "show", sid, "--json")
    assert shown.exit_code == 0, shown.output
    assert orjson.loads(shown.stdout)["id_hash"] == hash_id(sid)
    assert run(url, "rm", "--hard", sid).exit_code == 0
    assert run_json(url, "ls") == []


def test_show_json_decodes_values_and_per_key_expiry(url: str) -> None:
    manager = SessionManager(url, app_id="shop")
    with manager.open() as session:
        session["user"] = "alice"
        session["tags"] = {"a", "b"}  # a tagged type stays tagged, exactly
        session.set("token", "t-1", ttl=600)
    manager.close()
    shown = run_json(url, "show", session.id)
    assert shown["state"] == "live" and shown["id_hash"] == hash_id(session.id)
    fields = {field["key"]: field for field in shown["fields"]}
    assert fields["user"]["value"] == "alice" and fields["user"]["expires"] is None
    assert fields["tags"]["value"] == {"__t__": "set", "v": ["a", "b"]}
    assert fields["token"]["value"] == "t-1"
    assert fields["token"]["expires"] > shown["accessed"]
    result = run(url, "show", session.id)
    assert "token" in result.stdout and "in 9m" in result.stdout


def test_show_a_value_that_does_not_decode(url: str) -> None:
    store = open_store(url)
    now = time.time()
    key = RecordKey("shop", "ab" * 32)
    fields = {"good": b'j"fine"', "bad": b"\x00garbage"}
    store.create(key, NewRecord(now, now + IDLE, now + 3600, fields), now=now)
    store.close()
    result = run(url, "show", key.id_hash)
    assert result.exit_code == 0, result.output
    assert "fine" in result.stdout
    assert "<8 B, not decodable" in result.stdout
    bad = {f["key"]: f for f in run_json(url, "show", key.id_hash)["fields"]}["bad"]
    assert bad["value"] is None and bad["size"] == 8 and "frame" in bad["error"]


def test_show_unknown_malformed_and_ambiguous_ids(url: str) -> None:
    make_session(url)
    assert_one_line_error(run(url, "show", "0" * 64), 1, "no session 00000000")
    assert_one_line_error(run(url, "show", "not-an-id"), 2, "hash prefix")
    assert_one_line_error(run(url, "show", "abcd"), 2, "at least 8")
    store = open_store(url)
    now = time.time()
    for tail in ("0", "1"):
        key = RecordKey("shop", "abcdef01" + tail * 56)
        store.create(key, NewRecord(now, now + IDLE, now + 3600), now=now)
    store.close()
    assert_one_line_error(run(url, "show", "abcdef01"), 2, "matches 2 sessions")
    assert run(url, "show", "abcdef010").exit_code == 0


def test_store_text_is_printed_as_given(url: str) -> None:
    """App ids and keys come from the store: never read as rich markup."""
    sid = make_session(url, app_id="[red]shop", data={"[/oops]": "[bold]v"})
    listed = run(url, "ls")
    assert listed.exit_code == 0, listed.output
    assert "[red]shop" in listed.stdout
    shown = run(url, "show", sid)
    assert shown.exit_code == 0, shown.output
    assert "[/oops]" in shown.stdout and "[bold]v" in shown.stdout


# -- rm -----------------------------------------------------------------------------


def test_rm_leaves_a_tombstone(url: str) -> None:
    sid = make_session(url)
    result = run(url, "rm", hash_id(sid)[:12])
    assert result.exit_code == 0, result.output
    assert "invalidated" in result.stdout
    shown = run(url, "show", sid)
    assert shown.exit_code == 0
    assert "invalidated" in shown.stdout and "tombstone" in shown.stdout
    # The id is refused from now on: the manager starts a new session.
    manager = SessionManager(url, app_id="shop")
    with manager.open(sid) as session:
        assert session.is_new and "user" not in session
    manager.close()
    again = run_json(url, "rm", sid)
    assert again["changed"] is False and again["previous_state"] == "invalidated"


def test_rm_hard_deletes_the_record(url: str) -> None:
    sid = make_session(url)
    removed = run_json(url, "rm", "--hard", sid)
    assert removed == {
        "app_id": "shop",
        "id_hash": hash_id(sid),
        "action": "deleted",
        "changed": True,
        "previous_state": "live",
    }
    assert_one_line_error(run(url, "show", sid), 1, "no session")


# -- purge --------------------------------------------------------------------------


def test_purge_deletes_only_records_expired_longer_than_grace(url: str) -> None:
    live = make_session(url)
    recent = make_session(url, age=IDLE + 1000)  # expired 1000 s ago
    make_session(url, age=IDLE + 10_000)  # expired 10000 s ago
    assert run_json(url, "purge", "--grace", "5000")["purged"] == 1
    left = {row["id_hash"] for row in run_json(url, "ls", "--all")}
    assert left == {hash_id(live), hash_id(recent)}
    result = run(url, "purge")  # default grace: 120 s
    assert result.exit_code == 0
    assert "purged 1 record expired" in result.stdout
    assert [row["id_hash"] for row in run_json(url, "ls", "--all")] == [hash_id(live)]


def test_purge_is_for_every_app(url: str) -> None:
    assert_one_line_error(run(url, "--app-id", "shop", "purge"), 2, "drop --app-id")
    assert run(url, "purge", "--app-id", "shop").exit_code == 2  # no such option


def test_purge_runs_in_bounded_batches(url: str) -> None:
    store = open_store(url)
    old = time.time() - 100_000
    for n in range(5):
        key = RecordKey("shop", f"{n:064x}")
        store.create(key, NewRecord(old, old + IDLE, old + 3600), now=old)
    store.close()
    assert run_json(url, "purge", "--batch", "2") == {
        "purged": 5, "batches": 3, "grace": 120.0, "announced": 5,
    }  # fmt: skip
    assert run_json(url, "ls", "--all") == []


# -- stats --------------------------------------------------------------------------


def test_stats_per_app(url: str) -> None:
    make_session(url, app_id="shop", age=600)
    make_session(url, app_id="shop")
    make_session(url, app_id="shop", age=IDLE + 1000)
    ended = make_session(url, app_id="shop")
    run(url, "rm", ended)
    make_session(url, app_id="blog")
    rows = {row["app_id"]: row for row in run_json(url, "stats")}
    assert sorted(rows) == ["blog", "shop"]
    shop = rows["shop"]
    assert (shop["live"], shop["expired"], shop["invalidated"]) == (2, 1, 1)
    assert shop["bytes"] > 0
    assert shop["oldest_access"] < shop["newest_access"]
    assert (rows["blog"]["live"], rows["blog"]["expired"]) == (1, 0)
    table = run(url, "stats")
    assert table.exit_code == 0 and "shop" in table.stdout and "blog" in table.stdout


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "code", "words"),
    [
        pytest.param("bogus://x", 2, ["unknown session store URL", "sqlite://"], id="scheme"),
        pytest.param("sqlite://host/x.db", 2, ["has no host"], id="host"),
        pytest.param("sqlite:///dev/null/x.db", 1, ["unavailable"], id="unreachable"),
        pytest.param("bogus://u:hunter2@db:6379/0", 2, ["u:***@db"], id="masked"),
    ],
)
@pytest.mark.parametrize("command", ["ls", "stats", "purge"])
def test_bad_store_is_one_line_without_traceback(
    store: str, code: int, words: list[str], command: str
) -> None:
    result = run(store, command)
    assert_one_line_error(result, code, *words)
    assert "hunter2" not in result.output


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.delenv("SHOAL_STORE", raising=False)
    monkeypatch.setenv("SHOAL_DATA_DIR", str(tmp_path / "data"))
    yield


def test_default_store_is_the_embedded_sqlite_file(no_env: None, tmp_path: Path) -> None:
    """A session in the embedded default file is what the CLI finds with no store given.

    (Before anything was saved there, the CLI says so: tests/cli/test_missing_store.py.)
    """
    sid = make_session(f"sqlite://{tmp_path / 'data' / 'sessions.db'}")
    result = CliRunner().invoke(main, ["ls", "--json"])
    assert result.exit_code == 0, result.output
    assert [row["id_hash"] for row in orjson.loads(result.stdout)] == [hash_id(sid)]


def test_public_names() -> None:
    assert shoal.cli.__all__ == ["main"]
    assert sorted(shoal.cli.main.commands) == [
        "copy", "demo", "kill", "ls", "migrate", "purge", "rm", "show", "stats", "watch",
    ]
