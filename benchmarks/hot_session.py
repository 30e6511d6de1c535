"""One hot session, many clients: what each locking policy costs under contention.

Not a test: a script that prints a table. For every policy it runs one client
alone (the uncontended figure), then ``--clients`` client processes (spawn
context, each its own node id) hammering the same session, each request
``session["n"] += 1`` through ``manager.open``. It reports requests/s over all
clients, p50/p99 latency of one request, optimistic conflicts retried per
request, and the increments lost (lossy and merge write the same key, so the
last writer wins there; serialized and optimistic must lose none).

    python benchmarks/hot_session.py                      # SQLite in a temp dir
    python benchmarks/hot_session.py --store redis://127.0.0.1:6390/0 --seconds 5

An optimistic request that conflicts is run again until it saves (as the
middleware's ``retry_conflicts`` would); its latency includes the retries.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

from shoal import ConflictError, SessionManager

POLICIES = ("lossy", "merge", "optimistic", "serialized")
_SPAWN = multiprocessing.get_context("spawn")


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
        while (began := time.perf_counter()) < stop:
            for _ in range(10_000):
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
class Row:
    store: str
    policy: str
    clients: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    conflicts_per_req: float
    lost: int


def run(url: str, policy: str, clients: int, seconds: float) -> Row:
    app_id = f"bench{uuid.uuid4().hex[:8]}"
    manager = SessionManager(url, app_id=app_id)
    with manager.open() as session:
        session["n"] = 0
    sid = session.id
    start = _SPAWN.Barrier(clients)
    out = _SPAWN.Queue()
    procs = [
        _SPAWN.Process(
            target=client, args=(url, app_id, sid, policy, f"bench-{i}", seconds, start, out)
        )
        for i in range(clients)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 180) for _ in procs]
    for proc in procs:
        proc.join(30)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise SystemExit("\n".join(errors))
    latencies = sorted(x for r in results for x in r["latencies"])
    conflicts = sum(r["conflicts"] for r in results)
    with manager.open(sid, read_only=True) as session:
        final = session["n"]
    manager.close()
    count = len(latencies)
    p99 = latencies[min(count - 1, int(count * 0.99))]
    return Row(
        store=url.split(":", 1)[0],
        policy=policy,
        clients=clients,
        requests=count,
        rps=count / seconds,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=p99 * 1000,
        conflicts_per_req=conflicts / count,
        lost=count - final,
    )


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'store':<10} {'policy':<11} {'clients':>7} {'requests':>9} {'req/s':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'confl/req':>9} {'lost':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.store:<10} {r.policy:<11} {r.clients:>7} {r.requests:>9} {r.rps:>8.0f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.conflicts_per_req:>9.2f} {r.lost:>6}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", action="append", default=[],
        help="store URL (repeatable); default: SQLite in a temporary directory",
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--policy", action="append", choices=POLICIES, default=[])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        urls = args.store or [f"sqlite://{os.path.join(tmp, 'bench.db')}"]
        rows: list[Row] = []
        for url in urls:
            for policy in args.policy or POLICIES:
                for clients in (1, args.clients):
                    rows.append(run(url, policy, clients, args.seconds))
                    print(f"  {policy} x{clients}: {rows[-1].rps:.0f} req/s", file=sys.stderr)
        print(
            f"\nOne hot session, {args.seconds:g} s per run, python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs\n"
        )
        print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
