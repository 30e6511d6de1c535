"""``shoal demo --script``: the demo app in-process, then the real command in its own process.

The live cluster (``shoal demo`` without ``--script``) is tested in
``test_demo_cluster.py`` and, in a browser, ``test_demo_browser.py``.

The command runs as ``python -m shoal.cli`` exactly as a user runs it: real
worker processes, real ports, a real SQLite file. Each run is bounded by a
timeout; nothing waits on the clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from werkzeug.test import Client, TestResponse

from shoal import SessionManager
from shoal.cli import main
from shoal.cli._demo_app import build_app

TIMEOUT = 60


def shoal_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoal.cli", *args]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a child ``shoal``: no store from outside, a private data dir."""
    child = {k: v for k, v in os.environ.items() if k != "SHOAL_STORE"}
    child["SHOAL_DATA_DIR"] = str(tmp_path / "data")
    child["PYTHONUNBUFFERED"] = "1"
    return child


# -- the demo app -------------------------------------------------------------------


def body(response: TestResponse) -> Any:
    return orjson.loads(response.get_data())


def test_demo_app_routes() -> None:
    manager = SessionManager("memory://", app_id="demo")
    client = Client(build_app(manager))
    first = body(client.post("/cart?item=apple"))
    assert first == {"pid": os.getpid(), "session": {"cart": ["apple"]}, "new": True}
    anonymous = client.get_cookie("shoal")
    assert anonymous is not None
    login = body(client.post("/login?user=alice"))
    assert login["session"] == {"cart": ["apple"], "user": "alice"}
    cookie = client.get_cookie("shoal")
    assert cookie is not None and cookie.value != anonymous.value  # rotated
    client.post("/count?key=clicks")
    assert body(client.post("/count?key=clicks"))["session"]["clicks"] == 2
    assert body(client.get("/"))["session"] == {"cart": ["apple"], "user": "alice", "clicks": 2}
    assert body(client.post("/logout"))["session"] == {}
    assert body(client.get("/")) == {"pid": os.getpid(), "session": {}, "new": True}
    assert client.get("/nowhere").status_code == 404
    assert client.get("/cart?item=pear").status_code == 404  # writes are POST only
    missing = client.post("/cart")
    assert missing.status_code == 400 and "item" in body(missing)["error"]


@pytest.mark.parametrize(
    "mode", [pytest.param([], id="live"), pytest.param(["--script"], id="script")]
)
def test_demo_refuses_a_per_process_store(mode: list[str]) -> None:
    result = CliRunner().invoke(main, ["--store", "memory://", "demo", *mode])
    assert result.exit_code == 2
    assert "memory://" in result.stderr and "sqlite:///" in result.stderr
    assert "Traceback" not in result.output


def test_demo_with_a_bad_store_fails_before_starting_workers() -> None:
    result = CliRunner().invoke(main, ["demo", "--store", "sqlite:///dev/null/d.db", "--script"])
    assert result.exit_code == 1
    assert "unavailable" in result.stderr and "Traceback" not in result.output


# -- the command, for real ------------------------------------------------------------


def test_demo_runs_and_ends_by_itself(tmp_path: Path, env: dict[str, str]) -> None:
    store = f"sqlite:///{tmp_path}/d.db"
    done = subprocess.run(
        shoal_command("demo", "--script", "--nodes", "2", "--store", store), env=env,
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "session carried across 2 workers, 0 writes lost" in done.stdout
    assert "cookies were refused" in done.stdout
    assert f"shoal ls --all --store {store}" in done.stdout
    assert done.stderr == ""

    listed = subprocess.run(
        shoal_command("ls", "--json", "--store", store), env=env, capture_output=True,
        timeout=TIMEOUT,
    )
    assert listed.returncode == 0, listed.stderr
    sessions = orjson.loads(listed.stdout)
    assert [(s["app_id"], s["state"]) for s in sessions] == [("demo", "live")]


def test_demo_json_and_its_workers_are_gone(tmp_path: Path, env: dict[str, str]) -> None:
    store = f"sqlite:///{tmp_path}/d.db"
    done = subprocess.run(
        shoal_command("demo", "--script", "--json", "--workers", "3", "--store", store), env=env,
        capture_output=True, timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["ok"] is True
    assert (report["carried_across"], report["writes_lost"]) == (3, 0)
    pids = {worker["pid"] for worker in report["workers"]}
    assert len(pids) == 3 and pids == {r["pid"] for r in report["requests"]}
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # stopped and reaped by the demo
