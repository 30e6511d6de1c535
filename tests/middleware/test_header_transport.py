"""``HeaderTransport`` through the WSGI middleware: the id in ``X-Session-Id``, never a cookie.

werkzeug's test ``Client`` carries no header by itself: each test sends the
id by hand, as an API client does, and reads the new one from the response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from shoal import ConfigError, SessionManager
from shoal.ids import new_id
from shoal.stores.base import Store
from shoal.transports import MAX_ID_HEADER, CookieTransport, HeaderTransport
from shoal.wsgi import SessionMiddleware

from tests._counting import CountingStore

Environ = dict[str, Any]
SECRET = "header-transport-test-key-0123456789abcdefgh"


def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """/count increments, /peek reads, /login?user rotates, /logout ends, /none never looks."""
    session = environ["shoal.session"]
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    body = b""
    if path == "/count":
        session["n"] = session.get("n", 0) + 1
        body = str(session["n"]).encode()
    elif path == "/peek":
        body = str(session.get("n", "-")).encode()
    elif path == "/login":
        session.rotate(grace=0)  # at login: the pre-login id dies at once
        session["user"] = query
    elif path == "/logout":
        session.invalidate()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


@pytest.fixture
def store(local_store: Store) -> CountingStore:
    return CountingStore(local_store)


def client(store: CountingStore, app_id: str, name: str = "X-Session-Id") -> Client:
    manager = SessionManager(store, app_id=app_id)
    return Client(SessionMiddleware(app, manager, transport=HeaderTransport(name)))


def get(
    c: Client, path: str, session_id: str | None = None, name: str = "X-Session-Id"
) -> TestResponse:
    headers = {} if session_id is None else {name: session_id}
    response = c.get(path, headers=headers)
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers  # never a cookie, whatever happened
    return response


def test_a_counter_is_carried_by_the_header(store: CountingStore, app_id: str) -> None:
    c = client(store, app_id)
    first = get(c, "/count")
    session_id = first.headers["X-Session-Id"]
    assert first.text == "1" and len(session_id) == 43
    assert first.headers["Vary"] == "X-Session-Id"
    for expected in ("2", "3", "4"):
        response = get(c, "/count", session_id)
        assert response.text == expected
        assert "X-Session-Id" not in response.headers  # unchanged id: nothing to say
        assert response.headers["Vary"] == "X-Session-Id"
    assert get(c, "/peek").text == "-"  # no header: another client, another session
    assert get(c, "/peek", f"  {session_id}\t").text == "4"  # whitespace around it is no part


def test_the_header_name_is_configurable(store: CountingStore, app_id: str) -> None:
    c = client(store, app_id, name="Api-Session")
    session_id = get(c, "/count", name="Api-Session").headers["Api-Session"]
    response = get(c, "/count", session_id, name="Api-Session")
    assert response.text == "2" and response.headers["Vary"] == "Api-Session"
    assert get(c, "/peek", session_id).text == "-"  # X-Session-Id is not read at all


def test_rotate_at_login_sends_the_new_id_and_retires_the_old(
    store: CountingStore, app_id: str
) -> None:
    c = client(store, app_id)
    old = get(c, "/count").headers["X-Session-Id"]
    new = get(c, "/login?ada", old).headers["X-Session-Id"]
    assert new and new != old
    assert get(c, "/peek", new).text == "1"
    stale = get(c, "/peek", old)
    assert stale.text == "-" and stale.headers["X-Session-Id"] == ""  # drop it


def test_within_the_rotation_grace_the_old_id_gets_the_new_one_again(
    store: CountingStore, app_id: str
) -> None:
    """A periodic ``rotate()`` whose response was lost: the old id still works and is
    answered with the new one in the header (issue 14, item 3); dead after the grace."""
    from shoal import ManualClock

    clock = ManualClock(start=1_800_000_000.0)
    manager = SessionManager(store, app_id=app_id, clock=clock, rotation_grace=30)

    def renewing(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["shoal.session"].rotate()  # keeps the manager's grace
        return app(environ, start_response)

    c = Client(SessionMiddleware(app, manager, transport=HeaderTransport()))
    old = get(c, "/count").headers["X-Session-Id"]
    renew = Client(SessionMiddleware(renewing, manager, transport=HeaderTransport()))
    new = get(renew, "/peek", old).headers["X-Session-Id"]
    assert new not in ("", old)
    again = get(c, "/peek", old)  # the client never saw `new`
    assert (again.text, again.headers["X-Session-Id"]) == ("1", new)
    clock.advance(31)
    stale = get(c, "/peek", old)
    assert stale.text == "-" and stale.headers["X-Session-Id"] == ""
    assert get(c, "/peek", new).text == "1"


def test_invalidate_sends_the_header_empty(store: CountingStore, app_id: str) -> None:
    c = client(store, app_id)
    session_id = get(c, "/count").headers["X-Session-Id"]
    ended = get(c, "/logout", session_id)
    assert "X-Session-Id" in ended.headers and ended.headers["X-Session-Id"] == ""
    assert get(c, "/peek", session_id).text == "-"
    assert get(c, "/peek", "").text == "-"  # an empty header is no id


@pytest.mark.parametrize(
    "sent, cleared",
    [
        pytest.param("A" * 42, True, id="too-short"),
        pytest.param("A" * 44, True, id="too-long"),
        pytest.param("A" * 42 + "!", True, id="bad-character"),
        pytest.param(f"{new_id()}, {new_id()}", True, id="two-ids-joined"),
        pytest.param("A" * (MAX_ID_HEADER + 1), False, id="oversized-ignored-whole"),
        pytest.param("A" * 200_000, False, id="huge"),
    ],
)
def test_a_malformed_or_oversized_id_is_a_fresh_session_without_store_io(
    store: CountingStore, app_id: str, sent: str, cleared: bool
) -> None:
    c = client(store, app_id)
    response = get(c, "/peek", sent)
    assert response.text == "-" and store.calls == []
    # A malformed id is answered "drop your id"; an oversized header is not read at all.
    assert response.headers.get("X-Session-Id") == ("" if cleared else None)


def test_an_attacker_chosen_id_is_never_adopted(store: CountingStore, app_id: str) -> None:
    c = client(store, app_id)
    chosen = new_id()  # well-formed, unknown: a fixation attempt
    response = get(c, "/count", chosen)
    issued = response.headers["X-Session-Id"]
    assert response.text == "1" and issued != chosen
    assert "create" in store.calls
    assert get(c, "/peek", chosen).text == "-"
    assert get(c, "/peek", issued).text == "1"


def test_a_request_that_never_looks_costs_nothing_and_varies_on_nothing(
    store: CountingStore, app_id: str
) -> None:
    c = client(store, app_id)
    session_id = get(c, "/count").headers["X-Session-Id"]
    store.calls.clear()
    response = get(c, "/none", session_id)
    assert store.calls == [] and "Vary" not in response.headers
    assert "X-Session-Id" not in response.headers


def test_a_session_cookie_is_ignored_by_the_header_transport(
    store: CountingStore, app_id: str
) -> None:
    cookies = Client(SessionMiddleware(app, SessionManager(store, app_id=app_id)))
    cookies.get("/count")
    assert cookies.get_cookie("shoal") is not None
    # Same store and app, header transport: the browser's cookie is no id here.
    manager = SessionManager(store, app_id=app_id)
    header = SessionMiddleware(app, manager, transport=HeaderTransport())
    c = Client(header)
    c.set_cookie("shoal", cookies.get_cookie("shoal").value)  # type: ignore[union-attr]
    assert get(c, "/peek").text == "-"


def test_replica_over_a_header_is_refused_with_the_fix(app_id: str) -> None:
    manager = SessionManager("memory://", app_id=app_id, replica=True, secret_keys=[SECRET])
    with pytest.raises(ConfigError, match="leave transport= out"):
        SessionMiddleware(app, manager, transport=HeaderTransport())
    plain = SessionManager("memory://", app_id=app_id)
    with pytest.raises(ConfigError, match="replica=True to the SessionManager"):
        SessionMiddleware(app, plain, transport=CookieTransport(plain.cookie, replica=True))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("X_Session_Id", id="underscore"),
        pytest.param("X Session", id="space"),
        pytest.param("", id="empty"),
        pytest.param("Cookie", id="cookie"),
        pytest.param("set-cookie", id="set-cookie"),
    ],
)
def test_a_header_name_that_cannot_work_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="HeaderTransport\\('X-Session-Id'\\)"):
        HeaderTransport(name)


def test_repr_names_the_header() -> None:
    assert repr(HeaderTransport("Api-Session")) == "<HeaderTransport 'Api-Session'>"
