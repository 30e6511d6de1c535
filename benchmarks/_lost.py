"""Lost updates: 8 concurrent clients on ONE session, every contestant.

Each client runs ``requests`` requests, each of which (1) increments the
shared counter ``n`` (read, add one, write back) and (2) adds a key of its
own (``c<client>_<j>``). Afterwards the session is read once:

- ``lost keys``: own keys missing, of ``clients * requests`` written. Two
  requests writing *different* keys: a store that saves the whole session
  loses the one that saved first (Beaker, Flask-Session, Django); shoal's
  merge writes only the changed keys and loses none.
- ``lost increments``: ``clients * requests - n``. The same key read and
  written by concurrent requests: only a lock (serialized) or a conflict
  check with a retry (optimistic, here retried up to 50 times as
  ``retry_conflicts`` does) keeps every one.

Clients are threads of this process started together (a barrier), each with
its own session object per request, as a server's worker threads would be.
Cookie-only sessions (Starlette's, Django signed_cookies) have no shared
record: "one session" is each client's own copy, so they are not listed.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal import ConflictError, SessionManager
from shoal.stores import open_store

__all__ = ["LostResult", "run_lost_updates"]

CLIENTS = 8

Bump = Callable[[int, int], None]  # (client, j): one request
Final = Callable[[], dict[str, Any]]  # the session as it ends


@dataclass
class LostResult:
    store: str
    contestant: str
    writes: int
    lost_keys: int
    lost_increments: int
    error: str = ""


def _shoal(url: str, policy: str) -> tuple[Bump, Final, Callable[[], None]]:
    store = open_store(url)
    manager = SessionManager(store, app_id=f"lost-{uuid.uuid4().hex[:6]}", policy=policy,
                             lock_timeout=30)  # fmt: skip
    with manager.open() as session:
        session["n"] = 0
    sid = session.id

    def bump(client: int, j: int) -> None:
        for _ in range(50):
            try:
                with manager.open(sid) as session:
                    session["n"] = session.get("n", 0) + 1
                    session[f"c{client}_{j}"] = 1
                return
            except ConflictError:
                continue  # optimistic: re-run the request, as retry_conflicts does

    def final() -> dict[str, Any]:
        with manager.open(sid, read_only=True) as session:
            return dict(session)

    return bump, final, store.close


def _beaker(options: dict[str, Any]) -> tuple[Bump, Final, Callable[[], None]]:
    from beaker.session import Session  # type: ignore[import-untyped,unused-ignore]

    options = {"use_cookies": False, **options}
    first = Session({}, **options)
    first["n"] = 0
    first.save()
    sid = first.id

    def bump(client: int, j: int) -> None:
        session = Session({}, id=sid, **options)
        session["n"] = session.get("n", 0) + 1
        session[f"c{client}_{j}"] = 1
        session.save()

    def final() -> dict[str, Any]:
        return dict(Session({}, id=sid, **options))

    return bump, final, lambda: None


def _flask_session(config: dict[str, Any]) -> tuple[Bump, Final, Callable[[], None]]:
    from flask import Flask
    from flask_session import Session  # type: ignore[import-untyped,unused-ignore]

    app = Flask(f"lost{uuid.uuid4().hex[:6]}")
    app.config.update(SECRET_KEY="bench" * 8, **config)
    Session(app)
    interface = app.session_interface
    with app.test_request_context():
        from flask import request as current

        first = interface.open_session(app, current)
        assert first is not None
        first["n"] = 0
        response = app.response_class()
        interface.save_session(app, first, response)
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]

    def one(fill: Callable[[Any], None] | None) -> dict[str, Any]:
        with app.test_request_context(headers={"Cookie": cookie}) as context:
            session = interface.open_session(app, context.request)
            assert session is not None
            if fill is not None:
                fill(session)
                interface.save_session(app, session, app.response_class())
            return dict(session)

    def bump(client: int, j: int) -> None:
        def fill(session: Any) -> None:
            session["n"] = session.get("n", 0) + 1
            session[f"c{client}_{j}"] = 1

        one(fill)

    return bump, lambda: one(None), lambda: None


def _django(peer: Any, backend: str, alias: str) -> tuple[Bump, Final, Callable[[], None]]:
    import importlib

    store_class = importlib.import_module(f"django.contrib.sessions.backends.{backend}").SessionStore
    peer.alias = alias
    first = store_class()
    first["n"] = 0
    first.save()
    key = first.session_key

    def bump(client: int, j: int) -> None:
        session = store_class(key)
        session["n"] = session.get("n", 0) + 1
        session[f"c{client}_{j}"] = 1
        session.save()

    def final() -> dict[str, Any]:
        return dict(store_class(key).load())

    def close() -> None:
        from django.db import connections  # type: ignore[import-untyped,unused-ignore]

        connections.close_all()

    return bump, final, close


def _run_one(bump: Bump, final: Final, requests: int) -> tuple[int, int, int]:
    barrier = threading.Barrier(CLIENTS, timeout=60)
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            barrier.wait()
            for j in range(requests):
                bump(c, j)
        except BaseException as exc:  # reported in the table, not raised
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    state = final()
    writes = CLIENTS * requests
    own = sum(1 for c in range(CLIENTS) for j in range(requests) if f"c{c}_{j}" in state)
    return writes, writes - own, writes - int(state.get("n", 0))


def contestants(
    tmp: str, redis_url: str | None, pg_url: str | None, django: Any
) -> list[tuple[str, str, Callable[[], tuple[Bump, Final, Callable[[], None]]]]]:
    policies = ("lossy", "merge", "optimistic", "serialized")
    out: list[tuple[str, str, Callable[[], tuple[Bump, Final, Callable[[], None]]]]] = []
    sqlite_url = f"sqlite://{tmp}/lost.db"
    for policy in policies:
        out.append(("SQLite", f"shoal sqlite {policy}",
                    lambda p=policy: _shoal(sqlite_url, p)))  # type: ignore[misc]  # fmt: skip
    out.append(("SQLite", "beaker file", lambda: _beaker(
        {"type": "file", "data_dir": f"{tmp}/lost-beaker", "lock_dir": f"{tmp}/lost-beaker-l"})))
    if django is not None:
        out.append(("SQLite", "django db sqlite", lambda: _django(django, "db", "default")))
    if redis_url is not None:
        url = redis_url
        for policy in policies:
            out.append(("Redis", f"shoal redis {policy}",
                        lambda p=policy: _shoal(url, p)))  # type: ignore[misc]  # fmt: skip
        out.append(("Redis", "beaker ext:redis", lambda: _beaker({"type": "ext:redis", "url": url})))
        out.append(("Redis", "flask-session redis", lambda: _flask_session(
            {"SESSION_TYPE": "redis", "SESSION_REDIS": _redis(url)})))
        if django is not None:
            out.append(("Redis", "django cache (redis)", lambda: _django(django, "cache", "default")))
    if pg_url is not None:
        pg = pg_url
        for policy in policies:
            out.append(("PostgreSQL", f"shoal postgresql {policy}",
                        lambda p=policy: _shoal(pg, p)))  # type: ignore[misc]  # fmt: skip
        if django is not None:
            out.append(("PostgreSQL", "django db postgresql", lambda: _django(django, "db", "pg")))
    return out


def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def run_lost_updates(
    tmp: str, redis_url: str | None, pg_url: str | None, django: Any, *, requests: int
) -> list[LostResult]:
    results = []
    for store, name, make in contestants(tmp, redis_url, pg_url, django):
        try:
            bump, final, close = make()
        except ImportError as exc:
            print(f"  ({name}: {exc.name} is not installed; skipped)")
            continue
        try:
            writes, lost_keys, lost_n = _run_one(bump, final, requests)
            results.append(LostResult(store, name, writes, lost_keys, lost_n))
        except Exception as exc:  # a contestant that fails under concurrency: say how
            results.append(LostResult(store, name, CLIENTS * requests, -1, -1,
                                      f"{type(exc).__name__}: {exc}"[:80]))  # fmt: skip
        finally:
            close()
        r = results[-1]
        print(f"  {store:<11}{name:<30} lost keys {r.lost_keys:>4}/{r.writes}"
              f"  lost increments {r.lost_increments:>4}/{r.writes} {r.error}", flush=True)
    return results
