"""``shoal.flask``: ``flask.session`` as a shoal session, through Flask's test client.

What Flask users rely on (Flask's own session tests): the SessionMixin
attributes, the SESSION_* settings, Vary, an emptied session deleting the
cookie; and what shoal adds: a failed request saves nothing and holds no
lease, store errors are 503/409, the session stays readable while the body
streams.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import flask
import pytest
from flask import Flask, abort, session, stream_with_context

from shoal import (
    ConfigError,
    CookieOptions,
    ManualClock,
    SessionManager,
    SessionStateError,
    StoreUnavailable,
)
from shoal.flask import FlaskSession, current_session, init_app
from shoal.stores.memory import MemoryStore

from .._counting import CountingStore

Attributes = dict[str, str]


def cookie_attributes(header: str) -> tuple[str, Attributes]:
    """``name=value`` and the attributes (lower-cased names) of one Set-Cookie."""
    first, *rest = [part.strip() for part in header.split(";")]
    attributes: Attributes = {}
    for part in rest:
        name, _, value = part.partition("=")
        attributes[name.lower()] = value
    return first, attributes


def session_cookies(response: Any, name: str = "session") -> list[str]:
    return [h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{name}=")]


def make_app(manager: SessionManager, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)

    @app.get("/count")
    def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/read")
    def read() -> str:
        return str(session.get("n"))

    @app.get("/nothing")
    def nothing() -> str:
        return "no session"

    @app.get("/permanent")
    def permanent() -> str:
        session.permanent = True
        session["n"] = session.get("n", 0) + 1
        return "permanent"

    @app.get("/transient")
    def transient() -> str:
        session.permanent = False
        return "transient"

    @app.get("/boom")
    def boom() -> str:
        session["n"] = 1000
        raise ValueError("the view failed")

    init_app(app, manager)
    return app


@pytest.fixture
def manager(local_store_url: str, clock: ManualClock) -> Iterator[SessionManager]:
    opened = SessionManager(local_store_url, app_id="flask", clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def app(manager: SessionManager) -> Flask:
    return make_app(manager)


# -- the basics, on every store -------------------------------------------------


def test_a_counter_on_every_store_kind(store_url: str) -> None:
    manager = SessionManager(store_url, app_id="flask-kinds")
    try:
        client = make_app(manager).test_client()
        assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]
        assert client.get("/read").text == "3"
    finally:
        manager.close()


def test_flask_session_is_a_shoal_session(app: Flask) -> None:
    seen: dict[str, Any] = {}

    @app.get("/inspect")
    def inspect() -> str:
        seen["session"] = flask.session._get_current_object()  # type: ignore[attr-defined]
        seen["new"] = session.new
        return ""

    client = app.test_client()
    client.get("/inspect")
    assert isinstance(seen["session"], FlaskSession) and seen["new"] is True
    client.get("/count")
    client.get("/inspect")
    assert seen["new"] is False


def test_a_request_that_never_touches_the_session_sends_no_cookie_and_no_vary(
    tmp_path: Path, clock: ManualClock
) -> None:
    counting = CountingStore(MemoryStore())
    manager = SessionManager(counting, app_id="flask", clock=clock)
    client = make_app(manager).test_client()
    client.get("/count")
    counting.calls.clear()
    response = client.get("/nothing")
    assert counting.calls == [], "no store I/O"
    assert "Set-Cookie" not in response.headers and "Vary" not in response.headers


def test_vary_cookie_whenever_the_session_is_used_merged_with_the_app_vary(app: Flask) -> None:
    @app.get("/vary")
    def vary() -> flask.Response:
        response = flask.Response("")
        response.vary.update(("Accept-Encoding", "Accept-Language"))
        session.get("n")
        return response

    client = app.test_client()
    assert client.get("/read").headers["Vary"] == "Cookie"
    assert client.get("/vary").headers["Vary"] == "Accept-Encoding, Accept-Language, Cookie"


# -- SessionMixin: modified, permanent, refresh -----------------------------------------


def test_in_place_edits_are_saved_without_setting_modified(app: Flask) -> None:
    @app.get("/append")
    def append() -> str:
        session.setdefault("items", [])
        session["items"].append(len(session["items"]))
        return str(session["items"])

    client = app.test_client()
    assert [client.get("/append").text for _ in range(3)][-1] == "[0, 1, 2]"


def test_a_plain_session_cookie_is_a_browser_session_cookie_set_only_when_changed(
    app: Flask,
) -> None:
    client = app.test_client()
    (header,) = session_cookies(client.get("/count"))
    assert "max-age" not in cookie_attributes(header)[1]
    assert session_cookies(client.get("/count")) == [], "changed, same id: no Set-Cookie"
    assert session_cookies(client.get("/read")) == []


def test_modified_true_re_sends_the_cookie(app: Flask) -> None:
    @app.get("/force")
    def force() -> str:
        session.get("n")
        session.modified = True
        return ""

    client = app.test_client()
    client.get("/count")
    assert len(session_cookies(client.get("/force"))) == 1


def test_permanent_sessions_get_max_age_and_are_refreshed_each_request(app: Flask) -> None:
    app.permanent_session_lifetime = timedelta(hours=2)
    client = app.test_client()
    (header,) = session_cookies(client.get("/permanent"))
    assert cookie_attributes(header)[1]["max-age"] == "7200"
    (again,) = session_cookies(client.get("/read"))
    assert again.split(";")[0] == header.split(";")[0], "the same id, re-sent to slide"
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    assert session_cookies(client.get("/read")) == []
    assert client.get("/read").text == "1"


def _record_expires(manager: SessionManager) -> float:
    [info] = manager.store.records(manager.app_id)
    return info.expires


def test_permanent_gives_the_session_permanent_session_lifetime(
    manager: SessionManager, app: Flask, clock: ManualClock
) -> None:
    """The record lives PERMANENT_SESSION_LIFETIME, not the manager's idle_timeout (1800 s),
    and a read's touch slides it by that lifetime; ``permanent = False`` goes back."""
    app.permanent_session_lifetime = timedelta(hours=2)
    client = app.test_client()
    client.get("/permanent")
    assert current_lifetime(manager, client) == 7200
    assert _record_expires(manager) == clock() + 7200
    clock.advance(3600)  # past the manager's idle_timeout and the touch interval
    assert client.get("/read").text == "1", "still alive: its lifetime is two hours"
    assert _record_expires(manager) == clock() + 7200, "the touch slid it by two hours"
    client.get("/transient")
    assert current_lifetime(manager, client) is None
    assert _record_expires(manager) == clock() + manager.idle_timeout


def test_a_changed_permanent_session_lifetime_is_adopted_at_the_next_request(
    manager: SessionManager, app: Flask, clock: ManualClock
) -> None:
    app.permanent_session_lifetime = timedelta(hours=2)
    client = app.test_client()
    client.get("/permanent")
    app.permanent_session_lifetime = timedelta(hours=3)
    assert client.get("/read").text == "1"
    assert current_lifetime(manager, client) == 3 * 3600
    assert _record_expires(manager) == clock() + 3 * 3600


def current_lifetime(manager: SessionManager, client: Any) -> float | None:
    """The stored session's own lifetime, as the core sees it (the clock has not moved
    since the last request, so this read does not touch)."""
    cookie = client.get_cookie("session")
    assert cookie is not None
    with manager.open(cookie.value, read_only=True) as stored:
        assert not stored.is_new
        lifetime: float | None = stored.lifetime
    return lifetime


@pytest.mark.parametrize("refresh", [True, False])
def test_without_touch_session_refresh_each_request_slides_by_a_save(
    clock: ManualClock, refresh: bool
) -> None:
    """``touch_interval=None`` (reads never touch): SESSION_REFRESH_EACH_REQUEST saves
    a permanent session on every request, so its expiry slides as its cookie's does."""
    manager = SessionManager("memory://", app_id="flask", clock=clock, touch_interval=None)
    app = make_app(manager, SESSION_REFRESH_EACH_REQUEST=refresh)
    app.permanent_session_lifetime = timedelta(hours=2)
    client = app.test_client()
    client.get("/permanent")
    created = clock()
    clock.advance(600)
    assert client.get("/read").text == "1"
    assert _record_expires(manager) == (clock() if refresh else created) + 7200


def test_a_permanent_cookie_never_outlives_the_absolute_timeout(clock: ManualClock) -> None:
    manager = SessionManager("memory://", app_id="flask", clock=clock, absolute_timeout=3600)
    app = make_app(manager)
    client = app.test_client()
    (header,) = session_cookies(client.get("/permanent"))
    assert cookie_attributes(header)[1]["max-age"] == "3600"
    clock.advance(600)
    (header,) = session_cookies(client.get("/read"))
    assert cookie_attributes(header)[1]["max-age"] == "3000"


# -- cookie settings ------------------------------------------------------------


def test_cookie_settings_come_from_app_config_per_request(manager: SessionManager) -> None:
    app = make_app(
        manager, SESSION_COOKIE_NAME="sid", SESSION_COOKIE_DOMAIN=".example.com",
        SESSION_COOKIE_PATH="/app", SESSION_COOKIE_HTTPONLY=False, SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="strict", SESSION_COOKIE_PARTITIONED=True,
    )  # fmt: skip
    client = app.test_client()
    (header,) = session_cookies(client.get("/count"), "sid")
    _, attributes = cookie_attributes(header)
    assert attributes == {
        "path": "/app", "domain": ".example.com", "secure": "", "samesite": "Strict",
        "partitioned": "",
    }  # fmt: skip
    app.config["SESSION_COOKIE_NAME"] = "renamed"
    assert session_cookies(app.test_client().get("/count"), "renamed")


def test_flask_default_secure_false_follows_the_scheme(app: Flask) -> None:
    client = app.test_client()
    (plain,) = session_cookies(client.get("/count"))
    (https,) = session_cookies(app.test_client().get("/count", base_url="https://localhost"))
    assert "secure" not in cookie_attributes(plain)[1]
    assert "secure" in cookie_attributes(https)[1]


def test_the_managers_own_cookie_options_win(clock: ManualClock) -> None:
    manager = SessionManager(
        "memory://", app_id="flask", clock=clock, cookie=CookieOptions(name="__Host-sid")
    )
    client = make_app(manager).test_client()
    (header,) = session_cookies(client.get("/count", base_url="https://localhost"), "__Host-sid")
    assert "secure" in cookie_attributes(header)[1]


def test_cookie_options_in_two_places_are_refused(clock: ManualClock) -> None:
    manager = SessionManager("memory://", cookie=CookieOptions(name="sid"), clock=clock)
    with pytest.raises(ConfigError, match="SESSION_COOKIE_NAME.*in one place"):
        make_app(manager, SESSION_COOKIE_NAME="other")


def test_a_bad_cookie_setting_fails_at_init_app(manager: SessionManager) -> None:
    with pytest.raises(ConfigError, match="samesite.*SESSION_COOKIE"):
        make_app(manager, SESSION_COOKIE_SAMESITE="sometimes")


# -- ending a session -----------------------------------------------------------


def test_popping_the_last_key_deletes_the_session_and_the_cookie(app: Flask) -> None:
    @app.get("/pop")
    def pop() -> str:
        session.pop("n")
        return ""

    client = app.test_client()
    (created,) = session_cookies(client.get("/count"))
    (cleared,) = session_cookies(client.get("/pop"))
    assert cookie_attributes(cleared)[1]["max-age"] == "0"
    # The old id was ended: sent again, it loads nothing.
    other = app.test_client()
    other.set_cookie("session", created.split(";")[0].partition("=")[2])
    assert other.get("/read").text == "None"


def test_clear_logs_out_and_a_flash_after_it_survives(app: Flask) -> None:
    @app.get("/logout")
    def logout() -> str:
        session.clear()
        flask.flash("You have been logged out")
        return ""

    @app.get("/flashes")
    def flashes() -> str:
        return ",".join(str(message) for message in flask.get_flashed_messages())

    client = app.test_client()
    (before,) = session_cookies(client.get("/count"))
    (after,) = session_cookies(client.get("/logout"))
    assert after.split(";")[0] != before.split(";")[0], "a new id for what came after"
    assert client.get("/flashes").text == "You have been logged out"
    assert client.get("/read").text == "None"


# -- failures: rollback, no lease left, 503/409 --------------------------------------


@pytest.mark.parametrize("testing", [False, True], ids=["500-page", "propagated"])
def test_a_view_that_raises_saves_nothing(app: Flask, testing: bool) -> None:
    app.testing = testing
    client = app.test_client()
    client.get("/count")
    if testing:
        with pytest.raises(ValueError, match="the view failed"):
            client.get("/boom")
    else:
        response = client.get("/boom")
        assert response.status_code == 500 and session_cookies(response) == []
    assert client.get("/read").text == "1"


@pytest.mark.parametrize("testing", [False, True], ids=["500-page", "propagated"])
def test_under_serialized_a_view_that_raises_frees_the_session_at_once(
    clock: ManualClock, testing: bool
) -> None:
    # lock_timeout=0: a lease left behind would make the next request a 503 at once.
    manager = SessionManager(
        "memory://", app_id="flask", clock=clock, policy="serialized", lock_timeout=0
    )
    app = make_app(manager)
    app.testing = testing
    freed: list[bool] = []

    @app.errorhandler(500)
    def error_page(error: Exception) -> tuple[str, int]:
        # The lease is already released when the error page is made.
        with manager.open(client.get_cookie("session").value) as other:  # type: ignore[union-attr]
            freed.append(other["n"] == 1)
        return "sorry", 500

    client = app.test_client()
    client.get("/count")
    if testing:
        with pytest.raises(ValueError):
            client.get("/boom")
    else:
        assert client.get("/boom").text == "sorry" and freed == [True]
    assert client.get("/count").text == "2"


def test_an_error_handler_that_answers_500_saves_nothing_one_that_answers_200_saves(
    app: Flask,
) -> None:
    @app.errorhandler(ValueError)
    def handled(error: ValueError) -> tuple[str, int]:
        return "handled", 500 if flask.request.args.get("fail") else 200

    client = app.test_client()
    client.get("/count")
    assert client.get("/boom?fail=1").status_code == 500
    assert client.get("/read").text == "1"
    assert client.get("/boom").status_code == 200
    assert client.get("/read").text == "1000", "the app chose to answer: as Flask, it is saved"


def test_an_http_error_is_a_response_and_the_session_is_saved(app: Flask) -> None:
    @app.get("/forbidden")
    def forbidden() -> str:
        session["n"] = 5
        abort(403)

    client = app.test_client()
    response = client.get("/forbidden")
    assert response.status_code == 403 and len(session_cookies(response)) == 1
    assert client.get("/read").text == "5"


class FailingStore(CountingStore):
    """A memory store whose operations named in ``failing`` raise StoreUnavailable."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self.failing: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name in self.failing:
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise StoreUnavailable("memory://", "test outage")
            return fail
        return super().__getattr__(name)


@pytest.mark.parametrize("operation", ["load", "create"], ids=["at-load", "at-save"])
def test_an_unavailable_store_is_a_503(clock: ManualClock, operation: str) -> None:
    store = FailingStore()
    manager = SessionManager(store, app_id="flask", clock=clock)
    client = make_app(manager).test_client()
    client.get("/count")
    if operation == "create":
        client.delete_cookie("session")  # a new session: its save is a create
    store.failing.add(operation)
    response = client.get("/count")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.data == b"Session store unavailable.\n"
    assert session_cookies(response) == []


def test_a_lost_race_at_save_is_a_409(clock: ManualClock) -> None:
    manager = SessionManager("memory://", app_id="flask", clock=clock, policy="optimistic")
    app = make_app(manager)

    @app.get("/race")
    def race() -> str:
        n = session["n"]
        with manager.open(current_session().id) as other:  # another request, done first
            other["n"] = n + 100
        session["n"] = n + 1
        return "lost"

    client = app.test_client()
    client.get("/count")
    response = client.get("/race")
    assert response.status_code == 409 and response.data.startswith(b"Session changed")
    assert client.get("/read").text == "101"


def test_a_busy_session_is_a_503_with_retry_after(clock: ManualClock) -> None:
    manager = SessionManager(
        "memory://", app_id="flask", clock=clock, policy="serialized", lock_timeout=0
    )
    client = make_app(manager).test_client()
    client.get("/count")
    held = manager.begin(client.get_cookie("session").value)  # type: ignore[union-attr]
    held["n"]  # takes the lease  # noqa: B018
    try:
        response = client.get("/count")
        assert response.status_code == 503 and response.data == b"Session busy, retry.\n"
        assert response.headers["Retry-After"] == "1"
    finally:
        manager.rollback(held)
    assert client.get("/count").text == "2"


# -- after the save: streamed bodies ---------------------------------------------


def test_the_session_stays_readable_while_the_body_streams(app: Flask) -> None:
    @app.get("/stream")
    def stream() -> flask.Response:
        session["n"] = 7

        def body() -> Iterator[str]:
            yield f"n={session['n']};"
            try:
                session["late"] = True
            except SessionStateError:
                yield "late write refused"

        return flask.Response(stream_with_context(body()))

    client = app.test_client()
    assert client.get("/stream").text == "n=7;late write refused"
    assert client.get("/read").text == "7"



# -- the example -------------------------------------------------------------------


def test_the_example_app_runs_on_the_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    monkeypatch.delenv("SHOAL_STORE", raising=False)
    monkeypatch.setenv("SHOAL_DATA_DIR", str(tmp_path))
    path = Path(__file__).resolve().parents[2] / "examples" / "flask_app.py"
    spec = importlib.util.spec_from_file_location("flask_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    client = module.app.test_client()
    assert "visit 1" in client.get("/").text
    client.post("/cart", data={"item": "apple"})
    client.post("/login", data={"username": "ada"})
    page = client.get("/").text
    assert "logged in as ada" in page and "cart: apple" in page and "visit 2" in page
    client.post("/logout")
    page = client.get("/").text
    assert "You have been logged out." in page and "not logged in" in page
    assert (tmp_path / "sessions.db").exists(), "the embedded store"
    module.app.session_interface.manager.close()


def test_current_session_without_init_app_names_the_fix() -> None:
    app = Flask(__name__)

    @app.get("/")
    def view() -> str:
        return current_session().id

    app.testing = True
    with pytest.raises(ConfigError, match="init_app"):
        app.test_client().get("/")


def test_the_replica_restores_a_session_on_a_node_that_never_saw_it(clock: ManualClock) -> None:
    keys = ["k" * 16 + "0123456789abcdef"]
    node1, node2 = (
        SessionManager("memory://", app_id="flask", clock=clock, replica=True, secret_keys=keys)
        for _ in range(2)
    )
    response = make_app(node1).test_client().get("/count")
    sent = [h.split(";")[0] for h in response.headers.getlist("Set-Cookie")]
    assert [c.split("=")[0] for c in sent] == ["session", "session_r0"]
    other = make_app(node2).test_client()
    for cookie in sent:
        other.set_cookie(*cookie.split("=", 1))
    assert other.get("/count").text == "2", "restored from the replica"
