"""Issue 14 through the WSGI middleware: prefixed cookies, oversized headers, anonymous floods.

The application is called directly with plain environ dicts (no test client
in between), so 10,000 requests take about a second, and a Cookie header is
sent exactly as written.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal import SessionManager
from shoal.ids import new_id
from shoal.transports import replica_set_cookies
from shoal.stores.sqlite import SQLiteStore
from shoal.wsgi import SessionMiddleware

from tests._counting import CountingStore
from tests.unit.test_cookies import attributes, browser_keeps

Environ = dict[str, Any]
SECRET = "security-test-key-0123456789abcdefghijklmnop"


def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """/set?k=v writes, /get?k reads, /login?user rotates, /logout ends; /none never looks."""
    session = environ["shoal.session"]
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    body = b""
    if path == "/set":
        key, _, value = query.partition("=")
        session[key] = value
    elif path == "/get":
        body = str(session.get(query, "-")).encode()
    elif path == "/login":
        session.rotate(grace=0)  # at login: the pre-login id dies at once
        session["user"] = query
    elif path == "/logout":
        session.invalidate()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def call(
    wsgi: Callable[..., Iterable[bytes]], path: str, cookie: str = "", *, scheme: str = "https"
) -> tuple[str, list[str], bytes]:
    """One request: ``(status, Set-Cookie values, body)``."""
    route, _, query = path.partition("?")
    environ: Environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": route, "QUERY_STRING": query,
        "wsgi.url_scheme": scheme, "SERVER_NAME": "localhost", "SERVER_PORT": "443",
    }
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answer["status"], answer["headers"] = status, headers
        return lambda data: None

    body = b"".join(wsgi(environ, start_response))
    cookies = [value for name, value in answer["headers"] if name == "Set-Cookie"]
    return answer["status"], cookies, body


class Jar:
    """The cookies a browser would keep, by the prefix rules (``browser_keeps``)."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def take(self, headers: list[str]) -> None:
        for header in headers:
            assert browser_keeps(header), f"a browser drops {header[:80]!r}"
            name, attrs = attributes(header)
            value = header.split(";", 1)[0].partition("=")[2]
            if attrs.get("max-age") == "0":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(str(tmp_path / "sessions.db"))
    yield store
    store.close()


@pytest.mark.parametrize("replica", [pytest.param(False, id="store"),
                                     pytest.param(True, id="store+replica")])
def test_a_host_prefixed_session_is_carried_over_https(
    sqlite_store: SQLiteStore, replica: bool
) -> None:
    keys: dict[str, Any] = {"replica": True, "secret_keys": [SECRET]} if replica else {}
    manager = SessionManager(sqlite_store, cookie={"name": "__Host-shoal"}, **keys)
    wsgi = SessionMiddleware(app, manager)
    jar = Jar()
    status, headers, _ = call(wsgi, "/set?color=blue")
    assert status == "200 OK" and headers[0].startswith("__Host-shoal=")
    jar.take(headers)
    assert ("__Host-shoal_r0" in jar.cookies) is replica
    assert call(wsgi, "/get?color", jar.header())[2] == b"blue"
    # Behind a proxy that ends TLS the application sees plain http; the
    # prefixed cookie must still be Secure, or the browser drops it.
    status, headers, _ = call(wsgi, "/login?ann", jar.header(), scheme="http")
    assert headers and all("secure" in attributes(header)[1] for header in headers)
    jar.take(headers)
    assert call(wsgi, "/get?user", jar.header())[2] == b"ann"
    status, headers, _ = call(wsgi, "/logout", jar.header())
    jar.take(headers)
    assert jar.cookies == {}


def test_replica_chunks_of_a_host_prefixed_cookie_pass_the_browser_rules() -> None:
    manager = SessionManager(
        "memory://", cookie={"name": "__Host-shoal"}, replica=True, secret_keys=[SECRET]
    )
    headers = replica_set_cookies(manager.cookie, "1." + "x" * 9000, False, [], https=False)
    assert len(headers) == 3 and all(browser_keeps(h) for h in headers)


def test_an_oversized_cookie_header_gives_a_fresh_session_without_store_io(
    sqlite_store: SQLiteStore,
) -> None:
    counting = CountingStore(sqlite_store)
    wsgi = SessionMiddleware(app, SessionManager(counting))
    _, headers, _ = call(wsgi, "/set?a=1")
    session_id = headers[0].split(";")[0].partition("=")[2]
    counting.calls.clear()
    oversized = f"shoal={session_id}; junk=" + "x" * 200_000
    status, headers, body = call(wsgi, "/get?a", oversized)
    assert (status, body) == ("200 OK", b"-")
    assert counting.calls == []
    status, _, body = call(wsgi, "/get?a", "shoal=" + "A" * 200_000)  # an oversized id
    assert (status, body) == ("200 OK", b"-") and counting.calls == []


def garbage_cookies(count: int) -> Iterator[tuple[str, str, bool]]:
    """``(path, Cookie header, loads)`` of anonymous requests that never write.

    ``loads``: the one kind of request that may cost a store read (and no
    write): a session read with a well-formed id in a header of sane size.
    """
    kinds: list[tuple[Callable[[int], str], bool]] = [
        (lambda i: "", False),  # no cookie at all
        (lambda i: f"shoal={new_id()}", True),  # well-formed but unknown: never adopted
        (lambda i: f"shoal={'A' * (i % 43)}", False),  # too short
        (lambda i: f"shoal={'A' * (44 + i % 200)}", False),  # too long
        (lambda i: "shoal=" + os.urandom(32).hex()[:42] + "!", False),  # a bad character
        (lambda i: f"shoal={new_id()}; junk=" + "x" * 140_000, False),  # an oversized header
        (lambda i: f"shoal={new_id()}; shoal_r0=3.abc.1.{'B' * 50}; shoal_r1=zz", True),
        (lambda i: "=;;==; shoal; ;shoal==\"\"; \x00=\x01", False),  # not cookies at all
    ]
    for i in range(count):
        build, may_load = kinds[i % len(kinds)]
        reads = i % 3 != 0
        yield ("/get?x" if reads else "/none"), build(i), may_load and reads


@pytest.mark.parametrize("replica", [pytest.param(False, id="store"),
                                     pytest.param(True, id="store+replica")])
def test_ten_thousand_anonymous_requests_store_nothing(
    tmp_path: Path, replica: bool
) -> None:
    path = tmp_path / "flood.db"
    store = SQLiteStore(str(path))
    counting = CountingStore(store)
    keys: dict[str, Any] = {"replica": True, "secret_keys": [SECRET]} if replica else {}
    manager = SessionManager(counting, app_id="flood", **keys)
    wsgi = SessionMiddleware(app, manager)
    loads = 0
    for route, cookie, may_load in garbage_cookies(10_000):
        status, headers, body = call(wsgi, route, cookie)
        assert status == "200 OK" and body in (b"", b"-")
        assert all("Max-Age=0" in header for header in headers), "only clearing cookies"
        loads += may_load
    assert set(counting.calls) <= {"load"}, "no write of any kind"
    assert counting.calls.count("load") == loads
    assert list(store.records()) == []
    store.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM shoal_sessions").fetchone() == (0,)
    connection.close()


def test_a_lost_set_cookie_after_rotation_logs_no_one_out(sqlite_store: SQLiteStore) -> None:
    """rotate() (not at login): the old cookie gets the new id again, within the grace."""
    from shoal import ManualClock

    clock = ManualClock(start=1_800_000_000.0)
    manager = SessionManager(sqlite_store, clock=clock, rotation_grace=30)

    def rotating(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        session = environ["shoal.session"]
        if environ["PATH_INFO"] == "/renew":
            session.rotate()  # a periodic id renewal keeps the default grace
        body = str(session.get("a", "-")).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    wsgi = SessionMiddleware(rotating, manager)
    _, headers, _ = call(SessionMiddleware(app, manager), "/set?a=1")
    old = headers[0].split(";")[0]
    _, headers, _ = call(wsgi, "/renew", old)
    new = headers[0].split(";")[0]
    assert new != old  # ... and this response is lost: the browser still has `old`
    status, headers, body = call(wsgi, "/get", old)
    assert (status, body) == ("200 OK", b"1") and headers[0].split(";")[0] == new
    clock.advance(31)
    status, headers, body = call(wsgi, "/get", old)
    assert body == b"-" and "Max-Age=0" in headers[0]  # dead after the grace: cleared
    assert call(wsgi, "/get", new)[2] == b"1"
