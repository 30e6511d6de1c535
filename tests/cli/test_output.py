"""What the admin commands print: counts, sizes, large values, ids, one-line errors."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from shoal import SessionManager
from shoal.cli import main
from shoal.codec import JsonCodec
from shoal.ids import hash_id, new_id, session_ref


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'sessions.db'}"


def make_session(
    url: str, data: dict[str, Any], *, app_id: str = "shop", sid: str | None = None
) -> str:
    factory = (lambda: sid) if sid is not None else new_id
    # No size limit: these tests show sessions of several MiB on purpose.
    manager = SessionManager(url, app_id=app_id, id_factory=factory, max_session_bytes=None)
    try:
        with manager.open() as session:
            session.update(data)
        return session.id
    finally:
        manager.close()


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--store", url, *args])


def ok(url: str, *args: str) -> str:
    result = run(url, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


# -- counts -------------------------------------------------------------------------


def test_counts_are_singular_for_one(url: str) -> None:
    make_session(url, {"user": "alice"})
    listed = ok(url, "ls")
    assert re.search(r"\b1 live session\b", listed), listed
    assert "1 live sessions" not in listed
    assert re.search(r"\b1 session\b", ok(url, "ls", "--all"))
    sid = make_session(url, {"user": "bob", "cart": []})
    assert "2 live sessions" in ok(url, "ls")
    shown = ok(url, "show", sid)
    assert "2 keys" in shown
    one = make_session(url, {"user": "carol"})
    shown = ok(url, "show", one)
    assert re.search(r"\b1 key\b", shown) and "1 keys" not in shown


# -- sizes --------------------------------------------------------------------------


def test_sizes_are_human_in_tables_and_exact_in_json(url: str) -> None:
    sid = make_session(url, {"blob": "x" * (3 * 1024 * 1024)})
    size = orjson.loads(ok(url, "ls", "--json"))[0]["size"]
    assert size > 3 * 1024 * 1024
    for args in (["ls"], ["stats"], ["show", sid]):
        out = ok(url, *args)
        assert "3.0 MiB" in out, (args, out)
        assert str(size) not in out, (args, out)
    assert orjson.loads(ok(url, "stats", "--json"))[0]["bytes"] == size
    assert orjson.loads(ok(url, "show", sid, "--json"))["size"] == size


# -- large values -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x" * 2_000_000, id="string"),
        pytest.param(list(range(300_000)), id="list"),
        pytest.param({f"k{n}": n for n in range(100_000)}, id="dict"),
    ],
)
def test_show_decodes_only_what_it_shows(
    url: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large value is shown as one bounded line, never decoded in full."""
    sid = make_session(url, {"big": value, "user": "alice"})
    decoded: list[int] = []
    loads = JsonCodec.loads

    def spy(self: JsonCodec, data: bytes) -> Any:
        decoded.append(len(data))
        return loads(self, data)

    monkeypatch.setattr(JsonCodec, "loads", spy)
    out = ok(url, "show", sid)
    assert max(decoded, default=0) <= 64 * 1024, decoded
    assert len(out.splitlines()) < 30, out
    assert "alice" in out
    big = next(line for line in out.splitlines() if line.startswith("big"))
    assert "MiB" in big or "KiB" in big, big
    assert "--json" in big, "says where the whole value is"


def test_show_json_has_the_whole_value(url: str) -> None:
    value = {"items": list(range(200_000)), "tags": {"a", "b"}}
    sid = make_session(url, {"big": value})
    shown = orjson.loads(ok(url, "show", sid, "--json"))
    field = shown["fields"][0]
    assert field["key"] == "big"
    assert field["value"]["items"] == value["items"]
    assert field["value"]["tags"]["__t__"] == "set"
    assert field["size"] > 1_000_000


def test_a_small_nested_value_is_still_pretty_printed(url: str) -> None:
    sid = make_session(url, {"cart": ["apple", "pear"], "when": {"a": 1}})
    out = ok(url, "show", sid)
    assert "'pear'" in out and "{'a': 1}" in out


# -- ids ----------------------------------------------------------------------------


def assert_no_raw_id(result: Result, sid: str) -> None:
    for start in range(0, len(sid) - 6):
        assert sid[start : start + 6] not in result.output, result.output


def test_show_and_rm_never_echo_a_raw_id(url: str) -> None:
    make_session(url, {"user": "alice"})
    sid = new_id()  # well formed, in no store
    for command in ("show", "rm"):
        result = run(url, command, sid)
        assert result.exit_code == 1, result.output
        assert session_ref(hash_id(sid)) in result.stderr, result.stderr
        assert_no_raw_id(result, sid)


def test_a_malformed_raw_id_is_not_echoed(url: str) -> None:
    make_session(url, {"user": "alice"})
    sid = new_id()
    for ident in (sid[:-1], sid + "x", sid[:20] + "!" + sid[21:]):
        result = run(url, "show", ident)
        assert result.exit_code == 2, result.output
        assert "not a session id" in result.stderr
        assert_no_raw_id(result, sid)


def test_an_ambiguous_raw_id_is_not_echoed(url: str) -> None:
    sid = new_id()
    make_session(url, {"user": "alice"}, app_id="shop", sid=sid)
    make_session(url, {"user": "alice"}, app_id="blog", sid=sid)
    result = run(url, "show", sid)
    assert result.exit_code == 2, result.output
    assert "matches 2 sessions" in result.stderr and "--app-id" in result.stderr
    assert_no_raw_id(result, sid)
    assert run(url, "show", sid, "--app-id", "blog").exit_code == 0


def test_a_hash_prefix_is_echoed(url: str) -> None:
    make_session(url, {"user": "alice"})
    result = run(url, "show", "0123abcd")
    assert result.exit_code == 1
    assert "0123abcd" in result.stderr


# -- an unreachable server ----------------------------------------------------------


def test_an_unreachable_postgresql_is_one_line(tmp_path: Path) -> None:
    """Only the command's own message: no pool warnings before it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    store = f"postgresql://app:hunter2@127.0.0.1:{port}/app?pool_timeout=1&connect_timeout=1"
    env = {**os.environ, "SHOAL_STORE": store}
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "ls"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "unavailable" in done.stderr and "app:***@" in done.stderr
    assert "hunter2" not in done.stderr


def test_ls_quiet_prints_the_prefixes_that_show_accepts(url: str) -> None:
    ids = [make_session(url, {"n": n}) for n in range(3)]
    quiet = CliRunner().invoke(main, ["--store", url, "ls", "-q"])
    assert quiet.exit_code == 0, quiet.output
    prefixes = quiet.output.split()
    assert sorted(prefixes) == sorted(hash_id(i)[:16] for i in ids)
    shown = CliRunner().invoke(main, ["--store", url, "show", prefixes[0]])
    assert shown.exit_code == 0, shown.output
    both = CliRunner().invoke(main, ["--store", url, "ls", "-q", "--json"])
    assert both.exit_code == 2 and "--quiet and --json" in both.output
