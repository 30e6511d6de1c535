"""The peers shoal is measured beside: one request each (load, change one key, save).

Each session library's builder returns a ``Contestant``: ``new()`` makes a
session of about 500 bytes (``SESSION``) and gives its id; ``visit(id, i)``
loads that session, sets ``visits`` and saves it, through the library's own
session API, the way its framework does per HTTP request. The latency rows
time ``visit`` on one session (``timed``; the HTTP layer left out, as it is
for shoal's rows, so the rows compare session work with session work); the
throughput part serves the same ``Contestant`` under gunicorn, one session
per client cookie (``_served.py``). The floors and the ASGI contestants are
plain ``Request`` builders. Builders raise ``ImportError`` when the peer is
not installed (``pip install 'shoal[bench]'``); the caller skips that row
with a note.

Each builder also takes ``counter``: a callable the peer increments to count
how often its shared counter key was saved, for the lost-update benchmark
(``_lost.py``), which calls ``bump`` variants of the same builders.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from benchmarks._timing import PAYLOAD, SESSION, Request

__all__ = [
    "Bump",
    "Contestant",
    "beaker",
    "django_peer",
    "floor_cookie_redis",
    "floor_redis",
    "flask_session",
    "shoal",
    "timed",
]

Bump = Callable[[str], None]
"""One request that adds a key of its own (``own``) and increments ``counter``."""


@dataclass(frozen=True)
class Contestant:
    """A session library's request, by session id: one piece that the latency rows
    time in process and the throughput part serves over HTTP (rather than a WSGI
    app per peer beside these builders: two copies of each peer's setup)."""

    new: Callable[[], str]
    """Make a session holding ``SESSION``; its id (what the cookie carries)."""
    visit: Callable[[str, int], str]
    """One request on session ``id``: load, set ``visits`` to ``i``, save; the id
    after it (a library may re-key: Django's signed cookies carry the data)."""


def timed(contestant: Contestant) -> Request:
    """The latency rows' request: ``visit`` on one session made here."""
    sid = contestant.new()

    def request(i: int) -> None:
        nonlocal sid
        sid = contestant.visit(sid, i)

    return request


# -- shoal ------------------------------------------------------------------------


def shoal(manager: Any, *, change: bool = True) -> Contestant:
    """``manager.open`` per request; ``change=False``: a request that only reads."""

    def new() -> str:
        with manager.open() as session:
            session.update(SESSION)
        return str(session.id)

    def visit(sid: str, i: int) -> str:
        with manager.open(sid) as session:
            session["visits"] = i
        return str(session.id)

    def read(sid: str, i: int) -> str:
        with manager.open(sid) as session:
            assert session["theme"] == "dark"
        return str(session.id)

    return Contestant(new, visit if change else read)


# -- floors -----------------------------------------------------------------------


def floor_redis(url: str) -> Request:
    """redis-py GET + SET of the same bytes by key: the raw floor."""
    import redis

    client = redis.Redis.from_url(url)
    key = f"floor:{uuid.uuid4().hex}"
    client.set(key, PAYLOAD)

    def request(i: int) -> None:
        data = client.get(key)
        assert isinstance(data, bytes)
        client.set(key, data[:-4] + i.to_bytes(4, "big"))

    return request


def floor_cookie_redis(url: str) -> Request:
    """What a minimal Redis session costs: cookie parse + GET + JSON + SET EX."""
    from http.cookies import SimpleCookie

    import redis

    client = redis.Redis.from_url(url)
    sid = uuid.uuid4().hex
    client.set(f"floor:{sid}", json.dumps(SESSION), ex=1800)
    header = f"theme=dark; session={sid}; other=1"

    def request(i: int) -> None:
        cookie = SimpleCookie()
        cookie.load(header)
        key = f"floor:{cookie['session'].value}"
        data = client.get(key)
        assert isinstance(data, bytes)
        session = json.loads(data)
        session["visits"] = i
        client.set(key, json.dumps(session), ex=1800)

    return request


def floor_memory() -> Request:
    """A dict of JSON strings: what any in-process session costs at the least."""
    store = {"s": json.dumps(SESSION)}

    def request(i: int) -> None:
        session = json.loads(store["s"])
        session["visits"] = i
        store["s"] = json.dumps(session)

    return request


def floor_sqlite(
    path: str, synchronous: str, on_connect: Callable[[Any], None] | None = None
) -> tuple[Request, Callable[[], None]]:
    """One SELECT and one UPSERT of the same bytes by key, WAL, ``synchronous`` as given.

    ``on_connect`` sees the connection before the table is made (a statement counter).
    """
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    if on_connect is not None:
        on_connect(conn)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS floor (app_id TEXT, id_hash TEXT, data BLOB NOT NULL,"
        " PRIMARY KEY (app_id, id_hash)) WITHOUT ROWID"
    )
    key = ("bench", "f" * 64)
    upsert = (
        "INSERT INTO floor (app_id, id_hash, data) VALUES (?, ?, ?)"
        " ON CONFLICT (app_id, id_hash) DO UPDATE SET data = excluded.data"
    )
    conn.execute(upsert, (*key, PAYLOAD))

    def request(i: int) -> None:
        row = conn.execute("SELECT data FROM floor WHERE app_id = ? AND id_hash = ?", key)
        data = row.fetchone()[0]
        conn.execute(upsert, (*key, data[:-4] + i.to_bytes(4, "big")))

    return request, conn.close


# -- Beaker -----------------------------------------------------------------------


def beaker(options: dict[str, Any]) -> Contestant:
    """Beaker's ``Session`` with ``options`` (``type`` = file, ext:redis, ext:sqla...)."""
    from beaker.session import Session  # type: ignore[import-untyped,unused-ignore]

    options = {"use_cookies": False, **options}

    def new() -> str:
        first = Session({}, **options)
        first.update(SESSION)
        first.save()
        return str(first.id)

    def visit(sid: str, i: int) -> str:
        session = Session({}, id=sid, **options)
        session["visits"] = i
        session.save()
        return str(session.id)

    return Contestant(new, visit)


def beaker_sqla(url: str, lock_dir: str) -> Contestant:
    import sqlalchemy as sa
    from beaker.ext.sqla import SqlaNamespaceManager, make_cache_table  # type: ignore[import-untyped,unused-ignore]

    SqlaNamespaceManager._init_dependencies()  # imports sqlalchemy for make_cache_table
    engine = sa.create_engine(url)
    table = make_cache_table(sa.MetaData(), f"beaker_{uuid.uuid4().hex[:8]}")
    table.metadata.create_all(engine)
    return beaker({"type": "ext:sqla", "bind": engine, "table": table, "lock_dir": lock_dir})


# -- Flask-Session ------------------------------------------------------------------


def flask_session(config: dict[str, Any]) -> Contestant:
    """Flask-Session's interface (open_session/save_session on a prepared request)."""
    from flask import Flask
    from flask_session import Session  # type: ignore[import-untyped,unused-ignore]

    app = Flask(f"bench{uuid.uuid4().hex[:6]}")
    app.config.update(SECRET_KEY="bench" * 8, **config)
    if config.get("SESSION_TYPE") == "sqlalchemy":
        from flask_sqlalchemy import SQLAlchemy  # type: ignore[import-untyped,unused-ignore]

        app.config["SQLALCHEMY_DATABASE_URI"] = config["SQLALCHEMY_DATABASE_URI"]
        app.config["SESSION_SQLALCHEMY"] = SQLAlchemy(app)
        app.config["SESSION_SQLALCHEMY_TABLE"] = f"fs_{uuid.uuid4().hex[:8]}"
    with app.app_context():
        Session(app)
    interface = app.session_interface
    cookie_name = app.config["SESSION_COOKIE_NAME"]
    # One prepared request per session id, pushed once, so only the session work
    # is timed (a request context per visit would time Werkzeug's environ
    # building too); as many as there are clients.
    prepared: dict[str, Any] = {}
    response = app.response_class()

    def new() -> str:
        with app.test_request_context():
            from flask import request as current

            first = interface.open_session(app, current)
            assert first is not None
            first.update(SESSION)
            interface.save_session(app, first, app.response_class())
            return str(first.sid)  # type: ignore[attr-defined]  # a ServerSideSession

    def visit(sid: str, i: int) -> str:
        request = prepared.get(sid)
        if request is None:
            context = app.test_request_context(headers={"Cookie": f"{cookie_name}={sid}"})
            context.push()
            request = prepared[sid] = context.request
        session = interface.open_session(app, request)
        assert session is not None
        session["visits"] = i
        interface.save_session(app, session, response)
        return str(session.sid)  # type: ignore[attr-defined]

    return Contestant(new, visit)


# -- Django -----------------------------------------------------------------------


class DjangoPeer:
    """Django's session backends on one configuration: db (an alias per store), cache
    (Redis), cached_db, signed_cookies. Django is configured once per process."""

    def __init__(
        self, sqlite_path: str, pg_url: str | None, redis_url: str | None, *, migrate: bool = True
    ) -> None:
        """``migrate=False``: the tables exist (a served worker of a run whose
        process migrated them: four workers migrating at once would race)."""
        import django  # type: ignore[import-untyped,unused-ignore]
        from django.conf import settings  # type: ignore[import-untyped,unused-ignore]

        databases: dict[str, Any] = {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sqlite_path},
        }
        if pg_url is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(pg_url)
            databases["pg"] = {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parts.path.lstrip("/"),
                "USER": parts.username or "",
                "PASSWORD": parts.password or "",
                "HOST": parts.hostname or "",
                "PORT": str(parts.port or 5432),
                "CONN_MAX_AGE": None,
            }
        caches: dict[str, Any] = {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
        }
        if redis_url is not None:
            caches["default"] = {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": redis_url,
            }
        self.alias = "default"
        peer = self

        class Router:
            def db_for_read(self, model: Any, **hints: Any) -> str:
                return peer.alias

            def db_for_write(self, model: Any, **hints: Any) -> str:
                return peer.alias

            def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
                return True

        settings.configure(
            DATABASES=databases,
            DATABASE_ROUTERS=[Router()],
            CACHES=caches,
            INSTALLED_APPS=["django.contrib.sessions"],
            SECRET_KEY="bench-" + "k" * 50,
            SESSION_ENGINE="django.contrib.sessions.backends.db",
            USE_TZ=True,
        )
        django.setup()
        from django.core.management import call_command  # type: ignore[import-untyped,unused-ignore]

        for alias in databases if migrate else ():
            call_command("migrate", database=alias, verbosity=0)
        from django.db import connections  # type: ignore[import-untyped,unused-ignore]

        with connections["default"].cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")

    def contestant(self, backend: str, alias: str = "default") -> Contestant:
        """``backend``: db, cache, cached_db or signed_cookies."""
        import importlib

        module = importlib.import_module(f"django.contrib.sessions.backends.{backend}")
        store_class = module.SessionStore

        def new() -> str:
            self.alias = alias
            first = store_class()
            first.update(SESSION)
            first.save()
            return str(first.session_key)

        def visit(sid: str, i: int) -> str:
            self.alias = alias  # the variants interleave: route this request's queries
            session = store_class(sid)
            session["visits"] = i  # loads, then marks it modified
            session.save()
            return str(session.session_key)  # signed_cookies: the new cookie value

        return Contestant(new, visit)


# -- ASGI: Starlette, starsessions, shoal -----------------------------------------------


class AsgiClient:
    """Runs one ASGI request at a time on a private event loop, keeping cookies."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.cookies: dict[str, str] = {}

    def __call__(self, path: str) -> None:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1234),
            "headers": [(b"host", b"bench"), (b"cookie", cookie.encode())],
        }  # fmt: skip
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        self.loop.run_until_complete(self.app(scope, receive, send))
        start = sent[0]
        assert start["status"] == 200, start
        for name, value in start.get("headers", []):
            if name.lower() == b"set-cookie":
                pair = value.decode().split(";", 1)[0]
                key, _, val = pair.partition("=")
                self.cookies[key.strip()] = val.strip()

    def close(self) -> None:
        self.loop.close()


async def _respond(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"ok"})


def asgi_bare() -> Request:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _respond(send)

    client = AsgiClient(app)
    return lambda i: client("/")


def asgi_session_app(*, load: bool = False) -> Any:
    """An ASGI app that fills the session on /fill and sets ``visits`` on every request."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if load:
            from starlette.requests import Request as StarletteRequest
            from starsessions import load_session

            await load_session(StarletteRequest(scope, receive))
        session = scope["session"]
        if scope["path"] == "/fill":
            session.update(SESSION)
        else:
            session["visits"] = session.get("visits", 0) + 1
        await _respond(send)

    return app


def asgi_contestant(
    app: Any, *, aclose: Callable[[], Awaitable[None]] | None = None, stack: ExitStack | None = None
) -> Request:
    """Requests to ``app`` on one client; ``aclose`` awaited on its loop when ``stack`` ends."""
    client = AsgiClient(app)
    client("/fill")
    if aclose is not None and stack is not None:
        stack.callback(lambda: client.loop.run_until_complete(aclose()))
    return lambda i: client("/")


def starlette_cookie() -> Request:
    from starlette.middleware.sessions import SessionMiddleware

    return asgi_contestant(SessionMiddleware(asgi_session_app(), secret_key="bench" * 8))


def starsessions(store_kind: str, redis_url: str | None = None) -> Request:
    from starsessions import InMemoryStore, SessionMiddleware

    store: Any
    if store_kind == "redis":
        from starsessions.stores.redis import RedisStore

        assert redis_url is not None
        store = RedisStore(redis_url)
    else:
        store = InMemoryStore()
    return asgi_contestant(
        SessionMiddleware(asgi_session_app(load=True), store=store, lifetime=1800)
    )


def shoal_asgi(manager: Any, stack: ExitStack | None = None) -> Request:
    """shoal's ASGI middleware; with ``stack``, the manager's async clients closed at its end."""
    from shoal.asgi import SessionMiddleware

    # Its async twin's clients live on the client's loop: closed there.
    app = SessionMiddleware(asgi_session_app(), manager)
    return asgi_contestant(app, aclose=manager.aclose, stack=stack)


def tmp_dir(base: str, name: str) -> str:
    path = os.path.join(base, name)
    os.makedirs(path, exist_ok=True)
    return path
