"""One hot session, many clients: what each locking policy costs under contention.

Not a test: a script that prints a table, a thin command over
``benchmarks/_contention.py`` (which ``python -m benchmarks --only
contention`` runs too, on SQLite, Redis and PostgreSQL). For every policy:
one client alone, then ``--clients`` client processes on the same session,
each request ``session["n"] += 1``; requests/s, p50/p99, optimistic
conflicts retried per request, increments lost.

    python benchmarks/hot_session.py                      # SQLite in a temp dir
    python benchmarks/hot_session.py --store redis://127.0.0.1:6390/0 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._contention import POLICIES, print_contention, run_contention  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--store", action="append", default=[],
        help="store URL (repeatable); default: SQLite in a temporary directory",
    )  # fmt: skip
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--policy", action="append", choices=POLICIES, default=[])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        urls = args.store or [f"sqlite://{os.path.join(tmp, 'bench.db')}"]
        rows = run_contention(urls, clients=args.clients, seconds=args.seconds,
                              policies=args.policy or POLICIES)  # fmt: skip
        print(f"\nOne hot session, {args.seconds:g} s per run, python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs\n")  # fmt: skip
        print_contention(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
