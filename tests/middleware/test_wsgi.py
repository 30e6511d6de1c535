"""The WSGI middleware through a real WSGI test client (werkzeug), on real stores."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from shoal import CookieOptions, ManualClock, SessionManager
from shoal.stores.base import Store
from shoal.stores.sqlite import SQLiteStore
from shoal.wsgi import SessionMiddleware

from tests._counting import CountingStore

Environ = dict[str, Any]


def demo_app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Routes that exercise the session: /set?k=v, /get?k, /none, /logout, /login."""
    session = environ["shoal.session"]
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    body = b""
    if path == "/set":
        key, _, value = query.partition("=")
        session[key] = value
    elif path == "/get":
        body = str(session.get(query, "-")).encode()
    elif path == "/logout":
        session.invalidate()
    elif path == "/login":
        session.rotate(grace=0)  # at login: the pre-login id dies at once
        session["user"] = query
    elif path == "/boom":
        session["x"] = "never saved"
        raise ZeroDivisionError
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def lazy_app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Starts the response from inside the body iterable, as generators do."""
    environ["shoal.session"]["lazy"] = "yes"
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"streamed"


@pytest.fixture
def manager(store: Store, clock: ManualClock, app_id: str) -> SessionManager:
    return SessionManager(store, app_id=app_id, clock=clock)


def client_for(manager: SessionManager, app: Any = demo_app) -> Client:
    return Client(SessionMiddleware(app, manager))


def raw_client(manager: SessionManager) -> Client:
    """A client without a cookie jar: the Cookie header is sent exactly as given."""
    return Client(SessionMiddleware(demo_app, manager), use_cookies=False)


def set_cookies(response: TestResponse) -> list[str]:
    return response.headers.getlist("Set-Cookie")




def test_untouched_session_costs_no_store_io(store: Store, clock: ManualClock) -> None:
    counting = CountingStore(store)
    client = client_for(SessionManager(counting, clock=clock))
    client.set_cookie("shoal", "A" * 43)
    response = client.get("/none")
    assert response.status_code == 200
    assert counting.calls == [] and set_cookies(response) == []


def test_session_carries_values_and_sets_cookie_once(manager: SessionManager) -> None:
    client = client_for(manager)
    first = client.get("/set?color=blue")
    [cookie] = set_cookies(first)
    assert cookie.startswith("shoal=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie, "plain HTTP in development: Secure follows the scheme"
    again = client.get("/get?color")
    assert again.text == "blue"
    assert set_cookies(again) == [], "an unchanged session sends no Set-Cookie"
    assert again.headers.get("Vary") == "Cookie"


def test_https_requests_get_secure_cookies(manager: SessionManager) -> None:
    response = client_for(manager).get("/set?a=1", base_url="https://localhost/")
    assert "Secure" in set_cookies(response)[0]


def test_cookie_options_are_all_emitted(store: Store, clock: ManualClock) -> None:
    options = CookieOptions(
        name="sid", domain=".example.com", path="/app", secure=True, samesite="None",
        partitioned=True, max_age=3600,
    )
    manager = SessionManager(store, clock=clock, cookie=options)
    [cookie] = set_cookies(client_for(manager).get("/set?a=1"))
    parts = cookie.split("; ")
    assert parts[0].startswith("sid=")
    for expected in ["Path=/app", "Domain=.example.com", "Max-Age=3600", "Secure", "HttpOnly",
                     "SameSite=None", "Partitioned"]:
        assert expected in parts


def test_persistent_cookie_slides_only_when_touched(store: Store, clock: ManualClock) -> None:
    manager = SessionManager(
        store, clock=clock, cookie=CookieOptions(max_age=1800), touch_interval=60
    )
    client = client_for(manager)
    client.get("/set?a=1")
    clock.advance(30)
    assert set_cookies(client.get("/get?a")) == [], "not due a touch: nothing to re-send"
    clock.advance(61)
    assert len(set_cookies(client.get("/get?a"))) == 1, "touched: the cookie slides"


def test_logout_clears_the_cookie_and_the_session(manager: SessionManager) -> None:
    client = client_for(manager)
    client.get("/set?a=1")
    old = client.get_cookie("shoal")
    assert old is not None
    [cleared] = set_cookies(client.get("/logout"))
    assert cleared.startswith("shoal=;") and "Max-Age=0" in cleared
    replay = client_for(manager)
    replay.set_cookie("shoal", old.value)
    assert replay.get("/get?a").text == "-"


def test_login_rotates_the_id(manager: SessionManager) -> None:
    client = client_for(manager)
    client.get("/set?cart=3")
    before = client.get_cookie("shoal")
    client.get("/login?ada")
    after = client.get_cookie("shoal")
    assert before is not None and after is not None and before.value != after.value
    assert client.get("/get?cart").text == "3" and client.get("/get?user").text == "ada"


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param("A" * 43, id="unknown"),
        pytest.param("A" * 42, id="truncated"),
        pytest.param("A" * 10_000, id="oversized"),
        pytest.param("<script>", id="foreign"),
        pytest.param("\u00e9" * 43, id="non-ascii"),
    ],
)
def test_bad_cookies_start_a_fresh_session(manager: SessionManager, cookie: str) -> None:
    response = raw_client(manager).get("/set?a=1", headers={"Cookie": f"shoal={cookie}"})
    assert response.status_code == 200
    [issued] = set_cookies(response)
    assert cookie not in issued


def test_a_tampered_id_is_not_a_session(manager: SessionManager) -> None:
    client = client_for(manager)
    client.get("/set?a=1")
    real = client.get_cookie("shoal")
    assert real is not None
    flipped = real.value[:-1] + ("A" if real.value[-1] != "A" else "B")
    attacker = client_for(manager)
    attacker.set_cookie("shoal", flipped)
    response = attacker.get("/get?a")
    assert response.text == "-"
    assert "Max-Age=0" in set_cookies(response)[0], "a stale cookie is cleared"


def test_malformed_cookie_header_is_tolerated(manager: SessionManager) -> None:
    client = client_for(manager)
    client.get("/set?a=1")
    sid = client.get_cookie("shoal")
    assert sid is not None
    response = raw_client(manager).get(
        "/get?a", headers={"Cookie": f'broken; ="x"; other="a;b; shoal={sid.value}'}
    )
    assert response.text == "1"


def test_app_exception_rolls_back(manager: SessionManager) -> None:
    client = client_for(manager)
    client.get("/set?x=kept")
    with pytest.raises(ZeroDivisionError):
        client.get("/boom")
    assert client.get("/get?x").text == "kept"


def test_start_response_inside_the_body(manager: SessionManager) -> None:
    client = client_for(manager, lazy_app)
    response = client.get("/")
    assert response.text == "streamed" and len(set_cookies(response)) == 1
    cookie = client.get_cookie("shoal")
    assert cookie is not None
    assert raw_client(manager).get("/get?lazy", headers={"Cookie": f"shoal={cookie.value}"}).text == "yes"


def test_unreachable_store_is_a_503_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's directory is replaced by a file: every open fails, until it is back."""
    base = tmp_path / "db"
    base.mkdir()
    store = SQLiteStore(str(base / "s.db"))
    client = client_for(SessionManager(store))
    client.get("/set?a=1")
    store.close()
    shutil.rmtree(base)
    base.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="shoal"):
        down = client.get("/get?a")
    assert down.status_code == 503
    assert down.text == "Session store unavailable.\n" and "Traceback" not in down.text
    assert down.headers["Retry-After"] == "1"
    assert any("unavailable" in r.getMessage() for r in caplog.records)
    os.remove(base)
    base.mkdir()
    up = client.get("/set?b=2")
    assert up.status_code == 200, "the next request after the store returns succeeds"
