"""Issue 14 on the async path: the ASGI middleware keeps the WSGI middleware's guarantees.

The middleware is called directly with plain scopes on one event loop (no
test client, no server), so 10,000 requests take seconds and headers are
sent exactly as written, several ``cookie`` headers included (HTTP/2 sends
one per cookie). The same attacks through WSGI: tests/middleware/test_security.py
and test_fixation.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal import SessionManager
from shoal.asgi import Receive, Scope, Send, SessionMiddleware
from shoal.ids import hash_id, new_id
from shoal.stores.base import RecordKey
from shoal.stores.sqlite import SQLiteStore
from tests._counting import CountingStore
from tests.fuzz._targets import exchange
from tests.middleware.test_security import SECRET, garbage_cookies



async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """/set?k=v writes, /get?k reads, /none never looks at the session."""
    session, query = scope["session"], scope["query_string"].decode()
    body = b""
    if scope["path"] == "/set":
        key, _, value = query.partition("=")
        session[key] = value
    elif scope["path"] == "/get":
        body = str(session.get(query, "-")).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def call(asgi: SessionMiddleware, path: str, *cookies: str) -> tuple[int, list[str], bytes]:
    """One request with each of ``cookies`` as a ``cookie`` header: (status, Set-Cookie, body)."""
    route, _, query = path.partition("?")
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "2", "method": "GET",
        "scheme": "https", "path": route, "raw_path": route.encode(),
        "query_string": query.encode(), "root_path": "",
        "headers": [(b"cookie", cookie.encode("latin-1")) for cookie in cookies],
        "server": ("localhost", 443), "client": ("127.0.0.1", 50000),
    }  # fmt: skip
    sent = await exchange(asgi, scope)
    start = sent[0]
    set_cookies = [v.decode("latin-1") for k, v in start["headers"] if k == b"set-cookie"]
    return start["status"], set_cookies, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(str(tmp_path / "sessions.db"))
    yield store
    store.close()


def test_an_oversized_cookie_header_gives_a_fresh_session_without_store_io(
    sqlite_store: SQLiteStore,
) -> None:
    counting = CountingStore(sqlite_store)
    asgi = SessionMiddleware(app, SessionManager(counting))

    async def scenario() -> None:
        _, headers, _ = await call(asgi, "/set?a=1")
        cookie = headers[0].split(";")[0]
        assert (await call(asgi, "/get?a", cookie))[2] == b"1"
        counting.calls.clear()
        junk = "junk=" + "x" * 200_000
        assert await call(asgi, "/get?a", f"{cookie}; {junk}") == (200, [], b"-")
        # HTTP/2 sends each cookie in a header of its own: joined, still too large.
        split = [cookie] + [f"junk{i}=" + "x" * 20_000 for i in range(10)]
        assert await call(asgi, "/get?a", *split) == (200, [], b"-")
        assert counting.calls == []
        # ... while a cookie split over sane headers is read as one.
        assert (await call(asgi, "/get?a", "theme=dark", cookie))[2] == b"1"

    asyncio.run(scenario())


def test_a_made_up_id_is_never_adopted(sqlite_store: SQLiteStore) -> None:
    manager = SessionManager(sqlite_store, app_id="asgi-fixation")
    asgi = SessionMiddleware(app, manager)
    planted = new_id()  # well-formed, never issued: the attacker's choice
    status, headers, _ = asyncio.run(call(asgi, "/set?user=victim", f"shoal={planted}"))
    sent = headers[0].split(";")[0].partition("=")[2]
    assert status == 200 and sent not in ("", planted)
    assert sqlite_store.load(RecordKey("asgi-fixation", hash_id(planted)),
                             now=manager.clock()).record is None
    assert [i.key.id_hash for i in sqlite_store.records("asgi-fixation")] == [hash_id(sent)]


@pytest.mark.parametrize("replica", [pytest.param(False, id="store"),
                                     pytest.param(True, id="store+replica")])
def test_ten_thousand_anonymous_requests_store_nothing(
    sqlite_store: SQLiteStore, replica: bool
) -> None:
    counting = CountingStore(sqlite_store)
    keys: dict[str, Any] = {"replica": True, "secret_keys": [SECRET]} if replica else {}
    asgi = SessionMiddleware(app, SessionManager(counting, app_id="asgi-flood", **keys))

    async def flood() -> int:
        loads = 0
        for route, cookie, may_load in garbage_cookies(10_000):
            status, headers, body = await call(asgi, route, *([cookie] if cookie else []))
            assert status == 200 and body in (b"", b"-")
            assert all("Max-Age=0" in header for header in headers), "only clearing cookies"
            # The ASGI middleware loads before the view, whether it reads or not.
            loads += may_load or (route == "/none" and _loads(cookie))
        return loads

    loads = asyncio.run(flood())
    assert set(counting.calls) <= {"load"}, "no write of any kind"
    assert counting.calls.count("load") == loads
    assert list(sqlite_store.records("asgi-flood")) == []


def _loads(cookie: str) -> bool:
    """Whether a request with this Cookie header carries a well-formed id of sane size."""
    from shoal.cookies import parse_cookie_header
    from shoal.ids import is_well_formed

    return is_well_formed(parse_cookie_header(cookie).get("shoal"))
