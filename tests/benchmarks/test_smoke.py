"""``python -m benchmarks --smoke`` runs end to end: every part, every group, every peer.

A few requests of each contestant, on the suite's private Redis and a fresh
PostgreSQL database; no timing is asserted (a shared CI machine says nothing
about speed), only that every row was measured, every table printed, and
that the semantics the tables report hold: shoal's merge loses no key
written by another client, optimistic (retried) and serialized lose nothing
(lost updates, and the hot session of the contention part); every served
contestant answered every request through gunicorn with a session per client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks._contention import POLICIES
from benchmarks._served import BARE, SERVED

ROOT = Path(__file__).resolve().parents[2]

for _peer in ("beaker", "flask_session", "flask_sqlalchemy", "django", "starsessions", "matplotlib"):
    pytest.importorskip(_peer, reason="the bench extra is not installed: pip install -e '.[bench]'")


@pytest.fixture
def pg_database(postgres_server: Any) -> Iterator[str]:
    """A database of its own (the benchmark's peers create tables: Django migrates)."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_server.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_smoke_run_measures_every_row(
    tmp_path: Path, redis_server: Any, pg_database: str
) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--json", str(out),
         "--charts", str(tmp_path), "--redis-url", redis_server.url, "--pg-url", pg_database],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    assert "skipped" not in run.stdout, run.stdout  # every peer of the bench extra ran
    for table in ("# latency", "# throughput", "# lost updates", "# contention", "# scale",
                  "# purge"):  # fmt: skip
        assert f"\n{table}" in run.stdout, run.stdout
    report = json.loads(out.read_text())

    groups = {r["group"] for r in report["latency"]}
    assert groups == {"memory & cookies", "ASGI", "SQLite", "Redis", "PostgreSQL"}
    for row in report["latency"]:
        assert row["median_us"] > 0 and row["ratio"] > 0, row
    variants = {r["variant"] for r in report["latency"]}
    for store in ("sqlite", "redis", "postgresql"):
        for policy in ("merge", "serialized"):
            assert f"shoal {store} {policy}" in variants

    lost = {(r["store"], r["contestant"]): r for r in report["lost_updates"]}
    for store, name in (("SQLite", "sqlite"), ("Redis", "redis"), ("PostgreSQL", "postgresql")):
        assert lost[(store, f"shoal {name} merge")]["lost_keys"] == 0
        for policy in ("optimistic", "serialized"):
            row = lost[(store, f"shoal {name} {policy}")]
            assert (row["lost_keys"], row["lost_increments"], row["error"]) == (0, 0, "")

    served = {r["contestant"]: r for r in report["throughput"]}
    assert set(served) == {BARE, *SERVED["quick"]}  # --smoke serves --quick's list
    for row in served.values():
        assert row["requests"] == 2 * 5 and row["errors"] == 0, row  # 2 clients x 5
        assert row["rps"] > 0 and row["ratio"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0, row
    assert served[BARE]["ratio"] == 1.0

    hot = {(r["store"], r["policy"], r["clients"]): r for r in report["contention"]}
    assert set(hot) == {(store, policy, clients) for store in ("sqlite", "redis", "postgresql")
                        for policy in POLICIES for clients in (1, 2)}  # fmt: skip
    for (store, policy, clients), row in hot.items():
        assert row["requests"] > 0, row
        if policy in ("optimistic", "serialized") or clients == 1:
            assert row["lost"] == 0, row  # a lock or a retried conflict check loses none

    purged = {r["store"]: r for r in report["purge"]}
    assert set(purged) == {"SQLite", "PostgreSQL"}
    for row in purged.values():
        assert row["purged"] == row["sessions"] > 0, row  # every expired one, no live one

    scale = report["scale"]
    assert scale["sessions"] > 0 and scale["memory_usage"] > scale["payload"] > 0
    assert (tmp_path / "benchmarks-latency.png").stat().st_size > 0
    assert (tmp_path / "benchmarks-lost-updates.png").stat().st_size > 0
    assert (tmp_path / "benchmarks-throughput.png").stat().st_size > 0

    again = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--from-json", str(out),
         "--markdown", str(tmp_path / "tables.md")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-4000:]
    tables = (tmp_path / "tables.md").read_text()
    assert "| served by gunicorn (4 sync workers) | requests/s |" in tables
    assert "| sqlite | serialized | 2 |" in tables
