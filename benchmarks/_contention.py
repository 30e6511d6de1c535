"""One hot session, many clients: what each locking policy costs under contention.

For every store and policy it runs one client alone (the uncontended
figure), then ``clients`` client processes (spawn context, each its own
node id) hammering the same session, each request ``session["n"] += 1``
through ``manager.open``. It reports requests/s over all clients, p50/p99
latency of one request, optimistic conflicts retried per request, and the
increments lost (lossy and merge write the same key, so the last writer
wins there; serialized and optimistic must lose none).

An optimistic request that conflicts is run again until it saves (as the
middleware's ``retry_conflicts`` would, here up to 10 000 times); its
latency includes the retries. Each client runs for ``seconds`` after a
common start and at most ``MAX_REQUESTS`` requests. ``python -m benchmarks
--only contention`` and ``benchmarks/hot_session.py`` both run this.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from benchmarks._together import p99, together
from shoal import ConflictError, SessionManager

__all__ = ["POLICIES", "ContentionRow", "print_contention", "run", "run_contention"]

POLICIES = ("lossy", "merge", "optimistic", "serialized")
MAX_REQUESTS = 200_000  # per client: the count bound beside the time bound
_RETRIES = 10_000  # optimistic re-runs of one request at the most


def client(
    url: str, app_id: str, sid: str, policy: str, node: str, seconds: float, start: Any, out: Any
) -> None:
    """One client process: requests until ``seconds`` after the common start."""
    manager = SessionManager(url, app_id=app_id, policy=policy, node_id=node, lock_timeout=60)
    latencies: list[float] = []
    conflicts = 0
    try:
        with manager.open(sid, read_only=True):  # connect before the clock starts
            pass
        start.wait(120)
        stop = time.perf_counter() + seconds
        for _ in range(MAX_REQUESTS):
            began = time.perf_counter()
            if began >= stop:
                break
            for _ in range(_RETRIES):
                try:
                    with manager.open(sid) as session:
                        session["n"] = session["n"] + 1
                    break
                except ConflictError:
                    conflicts += 1
            latencies.append(time.perf_counter() - began)
        out.put({"latencies": latencies, "conflicts": conflicts})
    except BaseException as exc:  # reported, so the parent never waits forever
        out.put({"error": f"{node}: {exc!r}"})
    finally:
        manager.close()


@dataclass
class ContentionRow:
    store: str
    policy: str
    clients: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    conflicts_per_req: float
    lost: int


def run(url: str, policy: str, clients: int, seconds: float) -> ContentionRow:
    """``clients`` processes on one fresh session of ``url`` under ``policy``."""
    app_id = f"bench{uuid.uuid4().hex[:8]}"
    manager = SessionManager(url, app_id=app_id)
    with manager.open() as session:
        session["n"] = 0
    sid = session.id
    results = together(
        client, [(url, app_id, sid, policy, f"bench-{i}", seconds) for i in range(clients)],
        timeout=seconds + 180,
    )  # fmt: skip
    latencies = sorted(x for r in results for x in r["latencies"])
    conflicts = sum(r["conflicts"] for r in results)
    with manager.open(sid, read_only=True) as session:
        final = session["n"]
    manager.close()
    count = len(latencies)
    return ContentionRow(
        store=url.split(":", 1)[0],
        policy=policy,
        clients=clients,
        requests=count,
        rps=count / seconds,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=p99(latencies) * 1000,
        conflicts_per_req=conflicts / count,
        lost=count - final,
    )


def run_contention(
    urls: Iterable[str], *, clients: int, seconds: float, policies: Iterable[str] = POLICIES
) -> list[ContentionRow]:
    """Every store and policy, one client alone and then ``clients`` at once."""
    rows: list[ContentionRow] = []
    policies = tuple(policies)
    for url in urls:
        for policy in policies:
            for n in (1, clients):
                rows.append(run(url, policy, n, seconds))
                r = rows[-1]
                print(f"  {r.store:<11}{policy:<11} x{n:<3} {r.rps:8.0f} req/s  "
                      f"p99 {r.p99_ms:7.2f} ms  lost {r.lost}", flush=True)  # fmt: skip
    return rows


def print_contention(rows: Iterable[ContentionRow]) -> None:
    head = (
        f"  {'store':<11}{'policy':<11} {'clients':>7} {'requests':>9} {'req/s':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'confl/req':>9} {'lost':>6}"
    )
    print(head)
    for r in rows:
        print(
            f"  {r.store:<11}{r.policy:<11} {r.clients:>7} {r.requests:>9} {r.rps:>8.0f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.conflicts_per_req:>9.2f} {r.lost:>6}"
        )
