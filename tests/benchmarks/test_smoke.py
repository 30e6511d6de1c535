"""``python -m benchmarks --smoke`` runs end to end: every part, every group, every peer.

A few requests of each contestant, on the suite's private Redis and a fresh
PostgreSQL database; no timing is asserted (a shared CI machine says nothing
about speed), only that every row was measured and that the semantics the
tables report hold: shoal's merge loses no key written by another client,
optimistic (retried) and serialized lose nothing.
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

    purged = {r["store"]: r for r in report["purge"]}
    assert set(purged) == {"SQLite", "PostgreSQL"}
    for row in purged.values():
        assert row["purged"] == row["sessions"] > 0, row  # every expired one, no live one

    scale = report["scale"]
    assert scale["sessions"] > 0 and scale["memory_usage"] > scale["payload"] > 0
    assert (tmp_path / "benchmarks-latency.png").stat().st_size > 0
    assert (tmp_path / "benchmarks-lost-updates.png").stat().st_size > 0
