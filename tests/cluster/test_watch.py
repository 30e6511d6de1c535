"""``shoal watch``: a separate process prints the events another process raises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from shoal import SessionManager
from shoal.cli import main
from shoal.ids import hash_id, session_ref

ROOT = Path(__file__).resolve().parents[2]


def _watch(url: str, app_id: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", "--store", url, "--app-id", app_id, "watch", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _raise_until_done(
    proc: subprocess.Popen[str], manager: SessionManager, limit: float = 30.0
) -> tuple[str, str, list[str]]:
    """Create sessions until ``watch`` exits (it must subscribe first); bounded in time."""
    refs: list[str] = []
    deadline = time.monotonic() + limit
    while proc.poll() is None and time.monotonic() < deadline:
        with manager.open() as session:
            session["n"] = 1
        refs.append(session_ref(hash_id(session.id)))
        try:
            proc.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    out, err = proc.communicate(timeout=10)
    return out, err, refs


def test_watch_json_prints_events_of_another_process(tmp_path: Path, app_id: str) -> None:
    url = f"sqlite://{tmp_path / 's.db'}"
    manager = SessionManager(url, app_id=app_id, node_id="web-1", events=True)
    try:
        proc = _watch(url, app_id, "--json", "--count", "2", "--timeout", "30")
        out, err, refs = _raise_until_done(proc, manager)
    finally:
        manager.close()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2
    assert all(e["event"] == "created" and e["node_id"] == "web-1" for e in lines)
    assert {e["ref"] for e in lines} <= set(refs)
    assert all(e["app_id"] == app_id for e in lines)


def test_watch_readable_lines(tmp_path: Path, app_id: str) -> None:
    url = f"sqlite://{tmp_path / 's.db'}"
    manager = SessionManager(url, app_id=app_id, node_id="web-2", events=True)
    try:
        proc = _watch(url, app_id, "--count", "1", "--timeout", "30")
        out, err, _ = _raise_until_done(proc, manager)
    finally:
        manager.close()
    assert proc.returncode == 0, err
    assert "created" in out and "node=web-2" in out
    assert "watching session events" in err


def test_watch_on_a_store_without_a_channel_says_so(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    result = CliRunner().invoke(main, ["--store", f"file://{tmp_path / 's'}", "watch"])
    assert result.exit_code == 1
    assert "no events channel" in result.output


def test_watch_without_app_id_says_which_app_it_watches_and_how_to_choose(
    tmp_path: Path,
) -> None:
    """Unlike ``ls`` and ``stats``, ``watch`` follows one app: without ``--app-id``
    a user whose app is ``shop`` must be told why nothing shows."""
    url = f"sqlite://{tmp_path / 's.db'}"
    manager = SessionManager(url, app_id="shop")
    with manager.open() as session:  # the store exists
        session["n"] = 1
    manager.close()
    result = CliRunner().invoke(main, ["--store", url, "watch", "--timeout", "0"])
    assert result.exit_code == 0, result.output
    assert "app 'default' (SessionManager's default app_id; --app-id APP" in result.stderr
