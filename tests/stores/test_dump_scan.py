"""A leaked store dump opens no session (issue 14, item 2), on every store.

Sessions are created, read, rotated (the old id left as a pointer in its
grace), locked, invalidated; then every byte the store holds is read the
way an attacker with the dump would (files byte for byte, every Redis key
and value of every master, every row of every SQL table) and searched for
every id shoal issued, in every form an id could be stored in (text, hex,
its 32 raw bytes, their hex). A canary written *as a value* must be found,
so the scan is shown to see the data: a scan that sees nothing would pass.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from shoal import ManualClock, SessionManager
from shoal.ids import new_id
from shoal.stores.base import Store
from tests.conftest import redis_master_ports


def _forms(session_id: str) -> list[bytes]:
    raw = base64.urlsafe_b64decode(session_id + "=")
    return [session_id.encode(), session_id.encode().hex().encode(), raw, raw.hex().encode()]


def _walk(value: Any, out: list[bytes], seen: set[int]) -> None:
    """Every str and bytes reachable from ``value``: the memory store's "dump"."""
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        out.append(bytes(value))
    elif isinstance(value, str):
        out.append(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(key, out, seen)
            _walk(item, out, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _walk(item, out, seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            _walk(getattr(value, item.name), out, seen)
    elif hasattr(value, "__dict__") and type(value).__module__.startswith("shoal"):
        _walk(vars(value), out, seen)


def _files(root: Path) -> list[bytes]:
    """Names and bytes of every file under ``root`` (SQLite's WAL and dbm's files included)."""
    out = []
    for path in sorted(root.rglob("*")):
        out.append(str(path.relative_to(root)).encode())
        if path.is_file():
            out.append(path.read_bytes())
    return out


def _redis(request: pytest.FixtureRequest, fixture: str) -> list[bytes]:
    import redis

    server = request.getfixturevalue(fixture)
    out: list[bytes] = []
    for port in redis_master_ports(server, fixture):
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=10) as client:
            for key in client.scan_iter(count=1000):
                out.append(key)
                kind = client.type(key)
                if kind == b"string":
                    out.append(client.get(key) or b"")
                elif kind == b"hash":
                    for name, value in client.hgetall(key).items():
                        out += [name, value]
                elif kind in (b"set",):
                    out += list(client.smembers(key))
                elif kind == b"zset":
                    out += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
                elif kind == b"list":
                    out += list(client.lrange(key, 0, -1))
                else:
                    out.append(client.dump(key) or b"")
    return out


def _cells(value: Any) -> list[bytes]:
    """A SQL cell's bytes; a JSON cell (PostgreSQL's fields) walked, base64 strings decoded."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [bytes(value)]
    if isinstance(value, dict):
        return [part for key, item in value.items() for part in _cells(key) + _cells(item)]
    if isinstance(value, list):
        return [part for item in value for part in _cells(item)]
    text = str(value).encode("utf-8", "surrogatepass")
    try:
        return [text, base64.b64decode(text, validate=True)]
    except ValueError:
        return [text]


def _server_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=""))


def _postgres(url: str) -> list[bytes]:
    import psycopg

    out: list[bytes] = []
    with psycopg.connect(_server_url(url), autocommit=True, connect_timeout=10) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
        for (table,) in tables:
            out.append(table.encode())
            for row in conn.execute(f'SELECT * FROM "{table}"').fetchall():
                out += [part for value in row for part in _cells(value)]
    return out


def _mysql(url: str) -> list[bytes]:
    from tests.stores._sql import mysql_connect

    out: list[bytes] = []
    conn = mysql_connect(_server_url(url))
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW TABLES")
            for (table,) in cursor.fetchall():
                out += _cells(table)
                cursor.execute(f"SELECT * FROM `{table}`")
                for row in cursor.fetchall():
                    out += [part for value in row for part in _cells(value)]
    finally:
        conn.close()
    return out


def dump(kind: str, store: Store, url: str, request: pytest.FixtureRequest, tmp: Path) -> bytes:
    """Everything ``store`` holds, as raw bytes joined by NULs."""
    if kind == "memory":
        parts: list[bytes] = []
        _walk(store, parts, set())
    elif kind in ("sqlite", "file", "dbm"):
        parts = _files(tmp)
    elif kind.startswith("redis"):
        parts = _redis(request, {"redis": "redis_server", "redis-cluster": "redis_cluster",
                                 "redis-sentinel": "redis_sentinel"}[kind])
    elif kind == "postgresql":
        parts = _postgres(url)
    else:
        parts = _mysql(url)
    return b"\x00".join(parts)


@pytest.fixture
def issued(store: Store, clock: ManualClock) -> Iterator[tuple[SessionManager, list[str], str]]:
    """A manager with sessions in every state, every id it issued, and a canary value."""
    manager = SessionManager(store, app_id="dump", clock=clock, policy="merge")
    ids: list[str] = []
    canary = new_id()  # id-shaped, stored as a value: the scan must find it
    with manager.open() as plain:
        plain["user"] = {"name": "ada", "canary": canary}
    ids.append(plain.id)
    with manager.open(plain.id) as read:
        assert read["user"]["name"] == "ada"
    with manager.open() as rotating:
        rotating["cart"] = [1, 2]
    ids.append(rotating.id)
    with manager.open(rotating.id) as moved:
        moved.rotate()  # the old id stays a pointer for the grace
    ids.append(moved.id)
    with manager.open() as gone:
        gone["x"] = 1
    ids.append(gone.id)
    with manager.open(gone.id) as ending:
        ending.invalidate()
    locked = manager.begin(None, policy="serialized")
    locked["held"] = True
    manager.commit(locked)
    ids.append(locked.id)
    held = manager.begin(locked.id, policy="serialized")
    assert held["held"] is True  # its lease is in the store during the scan
    try:
        yield manager, ids, canary
    finally:
        manager.rollback(held)


def test_a_store_dump_holds_no_session_id(
    issued: tuple[SessionManager, list[str], str],
    store_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    manager, ids, canary = issued
    kind = request.node.callspec.params["store_url"]
    data = dump(kind, manager.store, store_url, request, tmp_path)
    assert canary.encode() in data, "the scan does not see stored values"
    # The rotated id still opens its session (the grace): it must be absent too.
    with manager.open(ids[1], read_only=True) as through_old:
        assert through_old["cart"] == [1, 2]
    found = [
        (index, form) for index, sid in enumerate(ids) for form in _forms(sid) if form in data
    ]
    assert found == [], f"ids in the dump of {kind}: {found}"
