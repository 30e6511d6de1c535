"""Where a shoal request on Redis spends its time, layer by layer (merge policy).

Not a test: a script that prints three medians, interleaved request by request:

- ``lane``: the two commands of a request (``HGETALL``, ``EVALSHA`` of APPLY)
  sent on the store's own lane connection: round trips, server time, hiredis;
- ``store``: ``store.load`` + ``store.apply`` through ``open_store``'s store
  (circuit breaker, arguments, result objects) with the same bytes;
- ``full``: ``with manager.open(sid) as s: s["visits"] = i`` (manager,
  session, codec on top).

    python benchmarks/redis_layers.py [--requests 6000]
    python benchmarks/redis_layers.py --server [--requests 3000]

``--server`` prints instead what Redis spends: ``requests`` whole requests
of each policy (merge, serialized) after ``CONFIG RESETSTAT``, then ``INFO
commandstats`` (calls and µs per call of each command, the scripts' own
``redis.call``s counted apart as well as inside their ``EVALSHA``), and the
record's ``MEMORY USAGE`` and hash encoding.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import SESSION  # noqa: E402
from shoal import SessionManager  # noqa: E402
from shoal.ids import hash_id  # noqa: E402
from shoal.stores import open_store  # noqa: E402
from shoal.stores.base import Change, RecordKey  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--server", action="store_true", help="server µs per command instead")
    args = parser.parse_args()
    from tests.servers import RedisServer

    if args.server:
        with RedisServer() as server:
            server_costs(server.url, args.requests)
        return
    with RedisServer() as server:
        store: Any = open_store(server.url)
        manager = SessionManager(store, app_id="layers", policy="merge")
        with manager.open() as session:
            session.update(SESSION)
        sid = session.id
        value = dict(session._encoded_fields())["visits"]
        key = RecordKey("layers", hash_id(sid))
        inner = store.store
        _client, scripts, lane = inner._conn()
        name = inner._key(key)

        def full(i: int) -> None:
            with manager.open(sid) as s:
                s["visits"] = i

        def store_only(i: int) -> None:
            store.load(key, now=time.time())
            store.apply(key, Change(1800, set={"visits": value}), now=time.time())

        def lane_only(i: int) -> None:
            lane.call("HGETALL", name)
            lane.call("EVALSHA", scripts.apply.sha, 1, name, repr(time.time()), "1800.0",
                      "120.0", "0", "0", "", "0", "", "PUBLISH", "1", "0", "0", "visits", value)

        variants = {"full": full, "store": store_only, "lane": lane_only}  # full loads APPLY
        times: dict[str, list[float]] = {n: [] for n in variants}
        for f in variants.values():
            for i in range(300):
                f(i)
        for i in range(args.requests):
            for n, f in variants.items():
                started = time.perf_counter()
                f(i)
                times[n].append(time.perf_counter() - started)
        for n in variants:
            print(f"{n:<6} median {statistics.median(times[n]) * 1e6:7.1f} us")
        store.close()


def server_costs(url: str, requests: int) -> None:
    """Per policy: µs of server time per call of each command, then the record's size."""
    import redis

    admin: Any = redis.Redis.from_url(url)
    store: Any = open_store(url)
    for policy in ("merge", "serialized"):
        manager = SessionManager(store, app_id=f"server-{policy}", policy=policy)
        with manager.open() as session:
            session.update(SESSION)
        sid = session.id
        for i in range(300):  # warm: scripts loaded, connections made
            with manager.open(sid) as s:
                s["visits"] = i
        admin.config_resetstat()
        for i in range(requests):
            with manager.open(sid) as s:
                s["visits"] = i
        stats = admin.info("commandstats")
        print(f"{policy}, {requests} requests:")
        for name, row in sorted(stats.items()):
            if row["calls"] >= requests // 2:
                print(f"  {name.removeprefix('cmdstat_'):<10} {row['calls'] / requests:5.1f} "
                      f"a request  {row['usec_per_call']:7.2f} us a call")
        key = next(iter(admin.scan_iter(match=f"*server-{policy}*")))
        print(f"  MEMORY USAGE {admin.memory_usage(key, samples=0)} B "
              f"({admin.object('encoding', key).decode()}, {admin.hlen(key)} fields)")
    store.close()
    admin.close()


if __name__ == "__main__":
    main()
