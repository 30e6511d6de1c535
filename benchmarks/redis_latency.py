"""Per-request latency of shoal on Redis, beside the raw floor and the peers.

Not a test: a script that prints a table. One request = load a session,
change one key, save it; the session holds about 500 bytes. In the same run,
on the same Redis, with the same redis-py (hiredis parser when installed):

- the raw floor: redis-py ``GET`` + ``SET`` of the same 500 bytes by key;
- shoal through ``SessionManager.open`` under ``merge`` and ``serialized``
  (lock included), on the store ``open_store`` builds (circuit breaker
  included), and ``merge`` for a request that only reads (unchanged, not due
  a touch);
- the peers, each skipped with a note when not installed
  (``pip install 'shoal[bench]'``): Beaker's ``ext:redis`` session,
  Flask-Session's ``RedisSessionInterface`` (open_session/save_session on one
  prepared request), Django's cache session backend on ``RedisCache``.

Round trips are counted on the client for every variant alike: every redis-py
connection's ``send_packed_command`` is wrapped (one call = one write to the
socket = one round trip; a pipeline is one). Medians and p90 of one request,
and the ratio of medians to the floor, over ``--rounds`` rounds in which the
variants are interleaved request by request (see ``_timing.interleave``).

    python benchmarks/redis_latency.py                   # a private redis-server
    python benchmarks/redis_latency.py --redis-url redis://127.0.0.1:6390/5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
from redis.connection import AbstractConnection  # noqa: E402
from redis.utils import HIREDIS_AVAILABLE  # noqa: E402

from benchmarks import _peers  # noqa: E402
from benchmarks._timing import (  # noqa: E402
    PAYLOAD,
    SESSION,
    Counter,
    Request,
    Row,
    interleave,
    print_table,
)
from shoal import SessionManager  # noqa: E402
from shoal.stores import open_store  # noqa: E402


def count_round_trips() -> None:
    """Count writes to Redis sockets, by every redis-py connection of this process."""
    original = AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        if Counter.on:
            Counter.count += 1
        original(self, command, check_health)  # type: ignore[no-untyped-call]

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]


# -- the variants -----------------------------------------------------------------


def floor(url: str) -> Request:
    return _peers.floor_redis(url)


def shoal(url: str, policy: str, *, change: bool = True) -> Request:
    # touch_interval as the default (60 s): no request here is due a touch.
    manager = SessionManager(open_store(url), app_id=f"bench{uuid.uuid4().hex[:6]}", policy=policy)
    return _peers.timed(_peers.shoal(manager, change=change))


def beaker(url: str) -> Request:
    return _peers.timed(_peers.beaker({"type": "ext:redis", "url": url}))


def flask_session(url: str) -> Request:
    return _peers.timed(
        _peers.flask_session({"SESSION_TYPE": "redis", "SESSION_REDIS": redis.Redis.from_url(url)})
    )


def django_cache(url: str) -> Request:
    sqlite_path = os.path.join(tempfile.mkdtemp(prefix="shoal-bench-"), "django.db")
    return _peers.timed(_peers.DjangoPeer(sqlite_path, None, url).contestant("cache"))


PEERS: dict[str, Callable[[str], Request]] = {
    "beaker ext:redis": beaker,
    "flask-session redis": flask_session,
    "django cache backend": django_cache,
}


# -- the run ------------------------------------------------------------------------


@contextmanager
def redis_url(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from tests.servers import RedisServer

    with RedisServer() as server:
        yield server.url


def run(args: argparse.Namespace) -> list[Row]:
    count_round_trips()
    with redis_url(args.redis_url) as url:
        variants: dict[str, Request] = {
            "floor GET+SET": floor(url),
            "shoal merge": shoal(url, "merge"),
            "shoal serialized": shoal(url, "serialized"),
            "shoal merge, unchanged": shoal(url, "merge", change=False),
        }
        for name, make in PEERS.items():
            try:
                variants[name] = make(url)
            except ImportError as exc:
                print(f"  ({name}: {exc.name} is not installed: pip install 'shoal[bench]'; "
                      "skipped)")
        warmup = max(50, args.requests // 10)
        return interleave(variants, args.requests, warmup, rounds=args.rounds)


def report(rows: list[Row]) -> None:
    print_table(
        rows, floor="floor GET+SET", sent="round trips",
        title=f"redis-py {redis.__version__}, hiredis parser: {bool(HIREDIS_AVAILABLE)}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--redis-url", help="an existing Redis (default: a private one)")
    parser.add_argument("--requests", type=int, default=3000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of interleaved requests")
    report(run(parser.parse_args()))


if __name__ == "__main__":
    main()
