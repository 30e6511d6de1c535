"""``python -m benchmarks``: shoal beside its peers and the raw floors, in one run.

    pip install -e '.[all,bench]'
    python -m benchmarks                  # the full run (several minutes)
    python -m benchmarks --quick          # fewer requests and sessions
    python -m benchmarks --smoke          # a few requests of everything: CI's check
    python -m benchmarks --charts docs/   # also draw the PNG charts there
    python -m benchmarks --json out.json  # also write every number

Parts (``--only`` picks some): ``latency`` (per store group, every
contestant interleaved request by request, median of the per-round medians
over >= 3 rounds, p99, ratio to the group's floor), ``lost`` (8 concurrent
clients on one session: lost keys and lost increments of every contestant),
``throughput`` (each contestant served by gunicorn with 4 sync workers,
driven by client processes over HTTP: requests/s, p50/p99, share of a bare
app's throughput), ``contention`` (one hot session, every policy, one
client and then 8 client processes: requests/s, p50/p99, retries, lost
increments), ``scale`` (Redis ``MEMORY USAGE`` per session with many
stored), ``purge`` (purging 1M expired sessions on SQLite and PostgreSQL,
with the p99 of requests running meanwhile).

Servers: a private redis-server and PostgreSQL (``tests/servers``, as the
tests start them; PostgreSQL runs with fsync off, so it measures round trips
and CPU, not the disk) unless ``--redis-url``/``--pg-url`` name existing
ones; a store whose server cannot start is left out with a note.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _peers  # noqa: E402
from benchmarks._latency import Servers, print_results, run_latency  # noqa: E402
from benchmarks._lost import run_lost_updates  # noqa: E402
from benchmarks._scale import run_scale  # noqa: E402

PARTS = ("latency", "throughput", "lost", "contention", "scale", "purge")


class Sizes(NamedTuple):
    requests: int  # latency: per variant and round
    rounds: int  # latency
    lost_requests: int  # lost updates: per client
    sessions: int  # scale
    doomed: int  # purge: expired sessions
    served: str  # throughput: which list of _served.SERVED
    served_clients: int  # throughput: client processes
    served_warmup: int  # throughput: untimed requests per client
    served_requests: int  # throughput: timed requests per client, at the most
    served_seconds: float  # throughput: per contestant, at the most
    hot_clients: int  # contention: client processes on the hot session
    hot_seconds: float  # contention: per store, policy and client count


SIZES = {
    "full": Sizes(2000, 3, 50, 100_000, 1_000_000, "full", 8, 20, 500, 60.0, 8, 3.0),
    "quick": Sizes(500, 3, 25, 10_000, 100_000, "quick", 8, 10, 200, 20.0, 8, 2.0),
    "smoke": Sizes(5, 3, 3, 50, 2_000, "quick", 2, 2, 5, 10.0, 2, 0.2),
}


@contextmanager
def _server(kind: str, url: str | None, disabled: bool) -> Iterator[str | None]:
    if disabled:
        yield None
        return
    if url is not None:
        yield url
        return
    try:
        if kind == "redis":
            from tests.servers import RedisServer as Server
        else:
            from tests.servers import PostgresServer as Server  # type: ignore[assignment]
        server = Server()
        server.__enter__()
    except Exception as exc:  # no binary, no free port: leave the store out, say so
        print(f"  ({kind}: no private server ({type(exc).__name__}: {exc}); left out)")
        yield None
        return
    try:
        yield server.url
    finally:
        server.__exit__(None, None, None)


def machine() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for name in ("redis", "psycopg", "beaker", "flask_session", "django", "starlette",
                 "starsessions", "sqlalchemy"):  # fmt: skip
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            info[name] = None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=(__doc__ or "").split("\n\n")[0])  # fmt: skip
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="fewer requests and sessions")
    modes.add_argument("--smoke", action="store_true", help="a few requests of everything (CI)")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these parts")
    parser.add_argument("--groups", help="latency groups to run, comma-separated "
                        "(memory & cookies, asgi, sqlite, redis, postgresql)")  # fmt: skip
    parser.add_argument("--requests", type=int, help="per variant and round (latency)")
    parser.add_argument("--rounds", type=int, help="rounds of interleaved requests (>= 3)")
    parser.add_argument("--sessions", type=int, help="sessions stored for the scale part")
    parser.add_argument("--purge-sessions", type=int, help="expired sessions to purge")
    parser.add_argument("--served", help="throughput: the latency rows to serve, "
                        "comma-separated (default: the mode's list in benchmarks/_served.py)")
    parser.add_argument("--hot-seconds", type=float,
                        help="contention: seconds per store, policy and client count")
    parser.add_argument("--redis-url", help="an existing Redis (default: a private one)")
    parser.add_argument("--pg-url", help="an existing PostgreSQL (default: a private one)")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--charts", type=Path, metavar="DIR", help="draw PNG charts into DIR")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every number to FILE")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="write the tables as Markdown to FILE (docs/benchmarks.md's)")  # fmt: skip
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="measure nothing: report (and chart) a --json file again")  # fmt: skip
    args = parser.parse_args(argv)
    if args.from_json:
        return _report(json.loads(args.from_json.read_text()), args)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    size = SIZES[mode]
    doomed = args.purge_sessions or size.doomed
    requests = args.requests or size.requests
    rounds = args.rounds or size.rounds
    sessions = args.sessions or size.sessions
    parts = set(args.only or PARTS)
    only = {g.strip().lower() for g in args.groups.split(",")} if args.groups else None

    from benchmarks.redis_latency import count_round_trips

    count_round_trips()
    out: dict[str, Any] = {"machine": machine(), "mode": mode}
    print(f"shoal benchmarks ({mode}): {out['machine']}")
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="shoal-bench-"))
        redis_url = stack.enter_context(_server("redis", args.redis_url, args.no_redis))
        pg_url = stack.enter_context(_server("postgres", args.pg_url, args.no_postgres))
        try:
            django: Any = _peers.DjangoPeer(f"{tmp}/django.db", pg_url, redis_url)
        except ImportError as exc:
            django = None
            print(f"  (django: {exc.name} is not installed: pip install 'shoal[bench]'; skipped)")
        servers = Servers(tmp, redis_url, pg_url)
        latency, lost = [], []
        if "latency" in parts:
            latency = run_latency(servers, django, requests=requests, rounds=rounds, only=only)
            out["latency"] = [asdict(r) for r in latency]
        if "lost" in parts:
            print("\n== lost updates: 8 concurrent clients on one session")
            lost = run_lost_updates(tmp, redis_url, pg_url, django, requests=size.lost_requests)
            out["lost_updates"] = [asdict(r) for r in lost]
        if "throughput" in parts:
            from benchmarks._served import SERVED, run_throughput

            print(f"\n== throughput: gunicorn, 4 sync workers, {size.served_clients} clients")
            names = args.served.split(",") if args.served else SERVED[size.served]
            served = run_throughput(
                servers, django, [n.strip() for n in names], clients=size.served_clients,
                warmup=size.served_warmup, requests=size.served_requests,
                seconds=size.served_seconds,
            )  # fmt: skip
            out["throughput"] = [asdict(r) for r in served]
        if "contention" in parts:
            from benchmarks._contention import run_contention

            print(f"\n== contention: one hot session, 1 and {size.hot_clients} clients")
            hot = [f"sqlite://{tmp}/contention.db", redis_url, pg_url]
            rows = run_contention([u for u in hot if u is not None], clients=size.hot_clients,
                                  seconds=args.hot_seconds or size.hot_seconds)  # fmt: skip
            out["contention"] = [asdict(r) for r in rows]
        if "scale" in parts and redis_url is not None:
            print(f"\n== scale: Redis bytes per session, {sessions} sessions")
            scale = run_scale(redis_url, sessions)
            out["scale"] = asdict(scale)
        if "purge" in parts:
            from benchmarks._purge import run_purge

            print(f"\n== purge: {doomed} expired sessions, requests running meanwhile")
            out["purge"] = [asdict(r) for r in run_purge(tmp, pg_url, doomed)]
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return _report(out, args)


def _report(out: dict[str, Any], args: argparse.Namespace) -> int:
    from benchmarks._latency import Result
    from benchmarks._lost import LostResult

    print_report(out)
    if args.markdown:
        args.markdown.write_text(markdown(out))
    if args.charts:
        from benchmarks._charts import draw

        latency = [Result(**r) for r in out.get("latency", [])]
        lost = [LostResult(**r) for r in out.get("lost_updates", [])]
        for path in draw(latency, lost, args.charts, served=out.get("throughput", [])):
            print(f"chart: {path}")
    return 0


def _table(head: str, align: str, rows: Iterable[list[Any]]) -> list[str]:
    """A Markdown table after a blank line: ``head``'s columns split on ``|``,
    ``align`` one letter a column (``l`` left, ``r`` right)."""
    rule = " | ".join("---:" if a == "r" else "---" for a in align)
    return ["", f"| {head} |", f"| {rule} |", *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def markdown(out: dict[str, Any]) -> str:
    """The run's tables as Markdown."""
    lines: list[str] = []
    group = None
    for r in out.get("latency", []):
        if r["group"] != group:
            group = r["group"]
            lines += ["", f"**{group}**", "",
                      "| contestant | median µs | p99 µs | × floor |",
                      "| --- | ---: | ---: | ---: |"]  # fmt: skip
        lines.append(f"| {r['variant']} | {r['median_us']:.0f} | {r['p99_us']:.0f} "
                     f"| {r['ratio']:.2f} |")  # fmt: skip
    if out.get("lost_updates"):

        def lost(r: dict[str, Any], key: str) -> str:
            return "error" if r["error"] else f"{r[key]} / {r['writes']}"

        lines += _table("store | contestant | own keys lost | counter increments lost", "llrr",
                        ([r["store"], r["contestant"], lost(r, "lost_keys"),
                          lost(r, "lost_increments")] for r in out["lost_updates"]))  # fmt: skip
    if out.get("throughput"):
        lines += _table(
            "served by gunicorn (4 sync workers) | requests/s | × bare app | p50 ms | p99 ms "
            "| requests | errors", "lrrrrrr",
            ([r["contestant"], f"{r['rps']:.0f}", f"{r['ratio']:.2f}", f"{r['p50_ms']:.2f}",
              f"{r['p99_ms']:.2f}", r["requests"], r["errors"]] for r in out["throughput"]),
        )  # fmt: skip
    if out.get("contention"):
        lines += _table(
            "store | policy | clients | requests/s | p50 ms | p99 ms | retries per request "
            "| increments lost", "llrrrrrr",
            ([r["store"], r["policy"], r["clients"], f"{r['rps']:.0f}", f"{r['p50_ms']:.2f}",
              f"{r['p99_ms']:.2f}", f"{r['conflicts_per_req']:.2f}",
              f"{r['lost']} / {r['requests']}"] for r in out["contention"]),
        )  # fmt: skip
    if "scale" in out:
        s = out["scale"]
        lines += ["", "| sessions in Redis | payload B | MEMORY USAGE B | over payload B "
                  "| used_memory per session B |", "| ---: | ---: | ---: | ---: | ---: |",
                  f"| {s['sessions']} | {s['payload']} | {s['memory_usage']:.0f} | "
                  f"{s['memory_usage'] - s['payload']:.0f} | {s['used_memory_per_session']:.0f} |"]  # fmt: skip
    if out.get("purge"):
        lines += ["", "| store | expired sessions purged | seconds | per second "
                  "| requests meanwhile: median / p99 µs | no purge: median / p99 µs |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for r in out["purge"]:
            lines.append(f"| {r['store']} | {r['purged']} | {r['seconds']:.1f} | "
                         f"{r['purged'] / max(r['seconds'], 1e-9):,.0f} | "
                         f"{r['during_median_us']:.0f} / {r['during_p99_us']:.0f} | "
                         f"{r['idle_median_us']:.0f} / {r['idle_p99_us']:.0f} |")  # fmt: skip
    return "\n".join(lines).lstrip() + "\n"


def print_report(out: dict[str, Any]) -> None:
    from benchmarks._latency import Result

    if "latency" in out:
        print("\n# latency: one request (load, change one key, save), ~500-byte session")
        print_results([Result(**r) for r in out["latency"]])
    if "lost_updates" in out:
        print("\n# lost updates: 8 concurrent clients on one session")
        print(f"  {'store':<11}{'contestant':<30}{'lost keys':>12}{'lost increments':>18}")
        for r in out["lost_updates"]:
            note = f"  {r['error']}" if r["error"] else ""
            print(f"  {r['store']:<11}{r['contestant']:<30}{r['lost_keys']:>7}/{r['writes']:<4}"
                  f"{r['lost_increments']:>13}/{r['writes']:<4}{note}")  # fmt: skip
    if out.get("throughput"):
        from benchmarks._served import print_throughput

        print("\n# throughput: gunicorn with 4 sync workers, clients over HTTP, "
              "one session per client")
        print_throughput(out["throughput"])
    if out.get("contention"):
        from benchmarks._contention import ContentionRow, print_contention

        print("\n# contention: one hot session, each request n += 1, per policy")
        print_contention([ContentionRow(**r) for r in out["contention"]])
    if "scale" in out:
        s = out["scale"]
        print(f"\n# scale: {s['sessions']} sessions in Redis: payload {s['payload']} B, "
              f"MEMORY USAGE {s['memory_usage']:.0f} B "
              f"(+{s['memory_usage'] - s['payload']:.0f} B; target +150), "
              f"used_memory {s['used_memory_per_session']:.0f} B per session")
    for r in out.get("purge", []):
        print(f"\n# purge: {r['store']}: {r['purged']}/{r['sessions']} expired sessions in "
              f"{r['seconds']:.1f}s; concurrent requests median {r['during_median_us']:.0f} us, "
              f"p99 {r['during_p99_us']:.0f} us (none purging: {r['idle_median_us']:.0f} / "
              f"{r['idle_p99_us']:.0f} us)")


if __name__ == "__main__":
    raise SystemExit(main())
