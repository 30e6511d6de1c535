"""The WSGI request path end to end: the README app, late reads, logout + flash, cookies.

Through werkzeug's test client on memory and SQLite stores (the rules here do
not depend on the store).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from shoal import ManualClock, Policy, SessionManager, SessionStateError
from shoal.ids import hash_id
from shoal.stores.base import RecordKey, Store
from shoal.wsgi import SessionMiddleware

from tests._counting import CountingStore

Environ = dict[str, Any]
KEY = "request-path-test-key-" + "k" * 32


@pytest.fixture
def store(local_store: Store) -> Store:
    return local_store


@pytest.fixture
def manager(store: Store, clock: ManualClock, app_id: str) -> SessionManager:
    return SessionManager(store, app_id=app_id, clock=clock)


def set_cookies(response: TestResponse) -> list[str]:
    return response.headers.getlist("Set-Cookie")


# The README's WSGI quickstart, exactly as written there.
def readme_app(environ, start_response):  # type: ignore[no-untyped-def]
    session = environ["shoal.session"]
    session["visits"] = session.get("visits", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"visit {session['visits']}\n".encode()]


def test_the_readme_quickstart_counts_visits(manager: SessionManager) -> None:
    client = Client(SessionMiddleware(readme_app, manager))
    answers = [client.get("/") for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [r.text for r in answers] == ["visit 1\n", "visit 2\n", "visit 3\n"]
    cookie = client.get_cookie("shoal")
    assert cookie is not None
    with manager.open(cookie.value) as session:
        assert session["visits"] == 3


def test_the_body_iterable_reads_the_committed_session(manager: SessionManager) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterator[bytes]:
        session = environ["shoal.session"]
        session["items"] = [*session.get("items", []), "x"]
        start_response("200 OK", [])
        yield b"%d items" % len(session["items"])
        yield b", id kept" if session.id else b""

    client = Client(SessionMiddleware(app, manager))
    assert client.get("/").text == "1 items, id kept"
    assert client.get("/").text == "2 items, id kept"


def test_a_session_first_read_after_start_response_is_loaded_read_only(
    manager: SessionManager, clock: ManualClock
) -> None:
    with manager.open() as session:
        session["user"] = "ada"
    clock.advance(300)  # due a touch; a late read must not do it

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield str(environ["shoal.session"].get("user")).encode()

    client = Client(SessionMiddleware(app, manager))
    client.set_cookie("shoal", session.id)
    response = client.get("/")
    assert response.text == "ada" and set_cookies(response) == []
    [info] = manager.store.records(manager.app_id)
    assert info.accessed < clock()


def test_a_write_after_start_response_fails_and_saves_nothing(
    manager: SessionManager,
) -> None:
    ids: list[str] = []

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        session = environ["shoal.session"]
        session["a"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        ids.append(session.id)
        session["a"] = 2
        return [b"never sent"]

    client = Client(SessionMiddleware(app, manager))
    with pytest.raises(SessionStateError) as info:
        client.get("/")
    message = str(info.value)
    assert "committed when the response started" in message
    assert "before start_response" in message and "not saved" in message
    with manager.open(ids[0]) as session:
        assert not session.is_new and dict(session) == {"a": 1}, "the commit's data, unchanged"


# -- logout, then flash ---------------------------------------------------------------


def logout_app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = environ["shoal.session"]
    path = environ["PATH_INFO"]
    body = b""
    if path == "/login":
        session["user"] = "ada"
    elif path == "/logout":
        session.invalidate()
        session.flash("You have been logged out")
    elif path == "/page":
        flashes = [f.message for f in session.pop_flashes()]
        body = f"user={session.get('user')} flashes={flashes}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


@pytest.mark.parametrize("policy", [p.value for p in Policy])
def test_a_flash_after_logout_reaches_the_next_request(
    store: Store, clock: ManualClock, app_id: str, policy: str
) -> None:
    manager = SessionManager(store, app_id=app_id, clock=clock, policy=policy)
    client = Client(SessionMiddleware(logout_app, manager))
    client.get("/login")
    old = client.get_cookie("shoal")
    assert old is not None
    logout = client.get("/logout")
    assert logout.status_code == 200
    new = client.get_cookie("shoal")
    assert new is not None and new.value != old.value, "a fresh id for the fresh session"
    assert client.get("/page").text == "user=None flashes=['You have been logged out']"
    assert client.get("/page").text == "user=None flashes=[]", "a flash is read once"
    replay = Client(SessionMiddleware(logout_app, manager))
    replay.set_cookie("shoal", old.value)
    assert replay.get("/page").text == "user=None flashes=[]", "the old id stays dead"


def test_a_logout_without_a_flash_still_clears_the_cookie(manager: SessionManager) -> None:
    client = Client(SessionMiddleware(logout_app, manager))
    client.get("/login")

    def plain_logout(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["shoal.session"].invalidate()
        start_response("200 OK", [])
        return [b""]

    cookie = client.get_cookie("shoal")
    assert cookie is not None
    other = Client(SessionMiddleware(plain_logout, manager))
    other.set_cookie("shoal", cookie.value)
    [cleared] = set_cookies(other.get("/"))
    assert "Max-Age=0" in cleared
    assert [r for r in manager.store.records(manager.app_id) if not r.invalidated] == []


def test_a_flash_after_logout_with_a_replica(store: Store, clock: ManualClock, app_id: str) -> None:
    """The new session's replica is sent; the old replica never brings the old one back."""
    manager = SessionManager(
        store, app_id=app_id, clock=clock, replica=True, secret_keys=[KEY]
    )
    client = Client(SessionMiddleware(logout_app, manager))
    client.get("/login")
    old_id = client.get_cookie("shoal")
    old_replica = client.get_cookie("shoal_r0")
    assert old_id is not None and old_replica is not None
    logout = client.get("/logout")
    assert any(c.startswith("shoal_r0=") and "Max-Age=0" not in c for c in set_cookies(logout))
    new_id = client.get_cookie("shoal")
    new_replica = client.get_cookie("shoal_r0")
    assert new_id is not None and new_replica is not None
    assert new_replica.value != old_replica.value
    # The store loses the new session: its replica restores it, flash included.
    assert manager.store.delete(RecordKey(app_id, hash_id(new_id.value)))
    assert client.get("/page").text == "user=None flashes=['You have been logged out']"
    # A copy of the old cookies (stolen, or a stale tab) finds the tombstone.
    thief = Client(SessionMiddleware(logout_app, manager))
    thief.set_cookie("shoal", old_id.value)
    thief.set_cookie("shoal_r0", old_replica.value)
    assert thief.get("/page").text == "user=None flashes=[]"


# -- cookies the client should drop ---------------------------------------------------




def reader_app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    value = environ["shoal.session"].get("a", "-")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(value).encode()]


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param("A" * 42, id="truncated"),
        pytest.param("A" * 4000, id="oversized"),
        pytest.param("A" * 42 + "!", id="bad-character"),
        pytest.param("A" * 43, id="well-formed-unknown"),
    ],
)
def test_a_cookie_that_names_no_session_is_cleared(
    store: Store, clock: ManualClock, app_id: str, cookie: str
) -> None:
    counting = CountingStore(store)
    manager = SessionManager(counting, app_id=app_id, clock=clock)
    client = Client(SessionMiddleware(reader_app, manager), use_cookies=False)
    response = client.get("/", headers={"Cookie": f"shoal={cookie}"})
    assert response.status_code == 200 and response.text == "-"
    [cleared] = set_cookies(response)
    assert cleared.startswith("shoal=;") and "Max-Age=0" in cleared
    if len(cookie) != 43 or not cookie.isalnum():
        assert counting.calls == [], "a malformed id never reaches the store"


def test_no_cookie_no_set_cookie(manager: SessionManager) -> None:
    response = Client(SessionMiddleware(reader_app, manager)).get("/")
    assert response.text == "-" and set_cookies(response) == []
