"""The side-by-side latency table: per store, shoal's rows beside the floors and the peers.

Each group (memory & cookies, ASGI, SQLite, Redis, PostgreSQL) is one
``interleave`` run: its variants take turns request by request, over
``rounds`` rounds. A row's number is the median of its per-round medians, and
its ratio is that over the group's floor's (the same store's raw client doing
the least a session needs). A row whose peer is not installed is skipped with
a note (``pip install 'shoal[bench]'``).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from benchmarks import _peers
from benchmarks._timing import Request, Row, interleave
from benchmarks.sql_latency import pg_floor
from shoal import SessionManager
from shoal.stores import open_store

__all__ = ["Group", "Result", "Servers", "Stores", "groups", "run_latency"]


@dataclass
class Servers:
    """Where the stores live for this run (None: that store is not measured)."""

    tmp: str
    redis_url: str | None
    pg_url: str | None


@dataclass
class Result:
    """One row of the table: median and p99 of one request, its ratio to the floor."""

    group: str
    variant: str
    median_us: float
    p99_us: float
    ratio: float
    sent: float


Builder = Callable[[], Request | _peers.Contestant]
"""A row's builder: a floor's or an ASGI contestant's ``Request``, or a session
library's ``Contestant`` (timed here on one session, served by ``_served``)."""


@dataclass
class Group:
    name: str
    floor: str
    variants: dict[str, Builder] = field(default_factory=dict)


class Stores:
    """The run's shoal stores, one per URL, opened when a row first needs one.

    Lazily, so a served worker (``_served``) that builds one row of these
    groups opens that row's store only, not every store of the run.
    """

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._open: dict[str, Any] = {}

    def __call__(self, url: str) -> Any:
        if url not in self._open:
            self._open[url] = store = open_store(url)
            self._stack.callback(store.close)
        return self._open[url]

    def shoal(self, url: str, policy: str, app: str, *, change: bool = True) -> _peers.Contestant:
        return _peers.shoal(_manager(self(url), policy, app), change=change)


def _manager(store: Any, policy: str, app: str) -> SessionManager:
    # touch_interval as the default (60 s): no timed request is due a touch.
    return SessionManager(store, app_id=f"bench-{app}-{policy}", policy=policy)


def groups(servers: Servers, stack: ExitStack, django: Any) -> list[Group]:
    """Every group of this run, its variants as builders (called once, in order)."""
    tmp = servers.tmp
    stores = Stores(stack)
    memory = "memory://"
    memory_group = Group("memory & cookies", floor="floor dict+JSON")
    memory_group.variants = {
        "floor dict+JSON": _peers.floor_memory,
        "shoal memory merge": lambda: stores.shoal(memory, "merge", "mem"),
        "shoal memory serialized": lambda: stores.shoal(memory, "serialized", "mem"),
        "beaker file": lambda: _peers.beaker(
            {"type": "file", "data_dir": _peers.tmp_dir(tmp, "beaker-data"),
             "lock_dir": _peers.tmp_dir(tmp, "beaker-lock")}
        ),  # fmt: skip
    }
    if django is not None:
        memory_group.variants["django signed_cookies"] = lambda: django.contestant(
            "signed_cookies"
        )
    asgi = Group("ASGI", floor="floor: bare ASGI app")
    asgi.variants = {
        "floor: bare ASGI app": _peers.asgi_bare,
        "shoal asgi memory merge": lambda: _peers.shoal_asgi(
            _manager(stores(memory), "merge", "asgi")
        ),
        "starlette SessionMiddleware": _peers.starlette_cookie,
        "starsessions memory": lambda: _peers.starsessions("memory"),
    }
    if servers.redis_url is not None:
        url = servers.redis_url
        # Made from the URL, as an application does: its async twin is then
        # the native redis.asyncio store (a store object handed over has
        # only the store-thread fallback).
        asgi.variants["shoal asgi redis merge"] = lambda: _peers.shoal_asgi(
            _manager(url, "merge", "asgi"), stack
        )
        asgi.variants["starsessions redis"] = lambda: _peers.starsessions("redis", url)
    result = [memory_group, asgi]

    sqlite = Group("SQLite", floor="floor SELECT+UPSERT (NORMAL)")
    sqlite_url = f"sqlite://{os.path.join(tmp, 'shoal.db')}"

    def sqlite_floor_of(name: str, synchronous: str) -> Request:
        request, cleanup = _peers.floor_sqlite(os.path.join(tmp, name), synchronous)
        stack.callback(cleanup)
        return request

    sqlite.variants = {
        # shoal's SQLite store runs with synchronous=NORMAL (WAL): the floor too.
        "floor SELECT+UPSERT (NORMAL)": lambda: sqlite_floor_of("floor.db", "NORMAL"),
        "floor SELECT+UPSERT (FULL)": lambda: sqlite_floor_of("floor-full.db", "FULL"),
        "shoal sqlite merge": lambda: stores.shoal(sqlite_url, "merge", "sq"),
        "shoal sqlite serialized": lambda: stores.shoal(sqlite_url, "serialized", "sq"),
        "beaker ext:sqla sqlite": lambda: _peers.beaker_sqla(
            f"sqlite:///{os.path.join(tmp, 'beaker.db')}", _peers.tmp_dir(tmp, "beaker-sqla")
        ),
        "flask-session sqlalchemy sqlite": lambda: _peers.flask_session(
            {"SESSION_TYPE": "sqlalchemy",
             "SQLALCHEMY_DATABASE_URI": f"sqlite:///{os.path.join(tmp, 'flask.db')}"}
        ),  # fmt: skip
    }
    if django is not None:
        sqlite.variants["django db sqlite"] = lambda: django.contestant("db", "default")
    result.append(sqlite)

    if servers.redis_url is not None:
        url = servers.redis_url
        redis_group = Group("Redis", floor="floor cookie+GET+JSON+SET")
        redis_group.variants = {
            "floor cookie+GET+JSON+SET": lambda: _peers.floor_cookie_redis(url),
            "bare redis-py GET+SET": lambda: _peers.floor_redis(url),
            "shoal redis merge": lambda: stores.shoal(url, "merge", "r"),
            "shoal redis serialized": lambda: stores.shoal(url, "serialized", "r"),
            "shoal redis merge, unchanged": lambda: stores.shoal(url, "merge", "ru", change=False),
            "beaker ext:redis": lambda: _peers.beaker({"type": "ext:redis", "url": url}),
            "flask-session redis": lambda: _peers.flask_session(
                {"SESSION_TYPE": "redis", "SESSION_REDIS": _redis_client(url)}
            ),
        }
        if django is not None:
            redis_group.variants["django cache (redis)"] = lambda: django.contestant("cache")
            redis_group.variants["django cached_db (redis+sqlite)"] = lambda: django.contestant(
                "cached_db", "default"
            )
        result.append(redis_group)

    if servers.pg_url is not None:
        pg_url = servers.pg_url
        pg = Group("PostgreSQL", floor="floor SELECT+UPSERT")

        def pg_floor_of() -> Request:
            request, cleanup = pg_floor(pg_url)
            stack.callback(cleanup)
            return request

        sqla_url = pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
        pg.variants = {
            "floor SELECT+UPSERT": pg_floor_of,
            "shoal postgresql merge": lambda: stores.shoal(pg_url, "merge", "pg"),
            "shoal postgresql serialized": lambda: stores.shoal(pg_url, "serialized", "pg"),
            "beaker ext:sqla postgresql": lambda: _peers.beaker_sqla(
                sqla_url, _peers.tmp_dir(tmp, "beaker-sqla-pg")
            ),
            "flask-session sqlalchemy pg": lambda: _peers.flask_session(
                {"SESSION_TYPE": "sqlalchemy", "SQLALCHEMY_DATABASE_URI": sqla_url}
            ),
        }
        if django is not None:
            pg.variants["django db postgresql"] = lambda: django.contestant("db", "pg")
        result.append(pg)
    return result


def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def run_latency(
    servers: Servers, django: Any, *, requests: int, rounds: int, only: set[str] | None = None
) -> list[Result]:
    """Every group's table; ``django`` is the process's one DjangoPeer (or None)."""
    results: list[Result] = []
    with ExitStack() as stack:
        for group in groups(servers, stack, django):
            if only and group.name.lower() not in only:
                continue
            print(f"\n== {group.name}", flush=True)
            variants: dict[str, Request] = {}
            for name, make in group.variants.items():
                try:
                    built = make()
                    variants[name] = (
                        _peers.timed(built) if isinstance(built, _peers.Contestant) else built
                    )
                except ImportError as exc:
                    print(f"  ({name}: {exc.name} is not installed: pip install "
                          "'shoal[bench]'; skipped)")
                except Exception as exc:  # a peer that cannot run here: say so, go on
                    print(f"  ({name}: {type(exc).__name__}: {exc}; skipped)")
            warmup = max(20, requests // 10)
            rows = interleave(variants, requests, warmup, rounds=rounds, label="")
            results += summarize(group, rows, requests, rounds)
    return results


def summarize(group: Group, rows: list[Row], requests: int, rounds: int) -> list[Result]:
    """Median of the per-round medians, p99 over all rounds, ratio to the floor."""

    def median_of_rounds(row: Row) -> float:
        return statistics.median(
            statistics.median(row.times[r * requests : (r + 1) * requests]) for r in range(rounds)
        )

    medians = {row.variant: median_of_rounds(row) for row in rows}
    base = medians[group.floor]
    out = []
    for row in rows:
        p99 = statistics.quantiles(row.times, n=100)[-1] if len(row.times) > 1 else row.times[0]
        out.append(Result(group.name, row.variant, medians[row.variant] * 1e6, p99 * 1e6,
                          medians[row.variant] / base, row.sent))  # fmt: skip
    return out


def print_results(results: list[Result]) -> None:
    group = None
    for r in results:
        if r.group != group:
            group = r.group
            print(f"\n{group}")
            print(f"  {'variant':<34}{'median us':>10}{'p99 us':>10}{'x floor':>9}")
        print(f"  {r.variant:<34}{r.median_us:>10.1f}{r.p99_us:>10.1f}{r.ratio:>8.2f}x")
