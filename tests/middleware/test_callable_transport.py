"""Ids over any scheme (``CallableTransport``), and a transport chosen once, on the manager.

The same request path as the cookie and header transports: a fresh session
for a bad or oversized id with no store I/O, a client-chosen id never
adopted, "drop your id" at logout, and one transport for every middleware
and adapter of a manager.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import flask
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import Client

from shoal import ConfigError, SessionManager
from shoal.asgi import SessionMiddleware as AsgiMiddleware
from shoal.flask import init_app
from shoal.ids import new_id
from shoal.stores.base import Store
from shoal.transports import MAX_ID_HEADER, CallableTransport, HeaderGetter, HeaderTransport
from shoal.wsgi import SessionMiddleware

from tests._counting import CountingStore

Environ = dict[str, Any]
PREFIX = "Session "


def read_bearer(header: HeaderGetter) -> str | None:
    """The id of ``Authorization: Session <id>``, else None."""
    value = header("Authorization") or ""
    return value[len(PREFIX):] if value.startswith(PREFIX) else None


def send_new(session_id: str | None) -> Sequence[tuple[str, str]]:
    return [("X-New-Session", session_id or "")]


def transport() -> CallableTransport:
    return CallableTransport(read_bearer, send_new, vary=("Authorization",))


def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = environ["shoal.session"]
    if environ["PATH_INFO"] == "/logout":
        session.invalidate()
    elif environ["PATH_INFO"] == "/count":
        session["n"] = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(session.get("n", "-")).encode()]


@pytest.fixture
def store(local_store: Store) -> CountingStore:
    return CountingStore(local_store)


def auth(session_id: str) -> dict[str, str]:
    return {"Authorization": PREFIX + session_id}


def test_the_id_travels_through_the_applications_functions(
    store: CountingStore, app_id: str
) -> None:
    client = Client(SessionMiddleware(app, SessionManager(store, app_id=app_id), transport=transport()))
    first = client.get("/count")
    session_id = first.headers["X-New-Session"]
    assert first.text == "1" and "Set-Cookie" not in first.headers
    assert first.headers["Vary"] == "Authorization"
    second = client.get("/count", headers=auth(session_id))
    assert second.text == "2" and "X-New-Session" not in second.headers  # unchanged: silent
    ended = client.get("/logout", headers=auth(session_id))
    assert ended.headers["X-New-Session"] == ""  # send_id(None): drop your id
    assert client.get("/peek", headers=auth(session_id)).text == "-"


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param("A" * 42 + "!", id="malformed"),
        pytest.param("A" * (MAX_ID_HEADER + 1), id="oversized"),
        pytest.param("", id="empty"),
    ],
)
def test_a_bad_id_is_a_fresh_session_without_store_io(
    store: CountingStore, app_id: str, sent: str
) -> None:
    client = Client(SessionMiddleware(app, SessionManager(store, app_id=app_id), transport=transport()))
    assert client.get("/peek", headers=auth(sent)).text == "-"
    assert store.calls == []


def test_a_read_id_that_returns_no_string_is_no_id(store: CountingStore, app_id: str) -> None:
    odd = CallableTransport(lambda header: 42, send_new)  # type: ignore[arg-type, return-value]
    client = Client(SessionMiddleware(app, SessionManager(store, app_id=app_id), transport=odd))
    assert client.get("/peek").text == "-" and store.calls == []


def test_a_client_chosen_id_is_never_adopted(store: CountingStore, app_id: str) -> None:
    client = Client(SessionMiddleware(app, SessionManager(store, app_id=app_id), transport=transport()))
    chosen = new_id()
    issued = client.get("/count", headers=auth(chosen)).headers["X-New-Session"]
    assert issued != chosen
    assert client.get("/peek", headers=auth(chosen)).text == "-"


def test_not_two_functions_is_a_config_error_naming_the_shape() -> None:
    with pytest.raises(ConfigError, match=r"read_id\(header\)"):
        CallableTransport("X-Session-Id", send_new)  # type: ignore[arg-type]


def test_the_managers_transport_serves_every_middleware_and_adapter(
    store: CountingStore, app_id: str
) -> None:
    """One ``transport=`` on the manager: WSGI, ASGI and Flask all carry the id in it."""
    manager = SessionManager(store, app_id=app_id, transport=HeaderTransport("X-Session-Id"))

    wsgi = Client(SessionMiddleware(app, manager))
    session_id = wsgi.get("/count").headers["X-Session-Id"]

    async def count(request: Request) -> Response:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(str(request.session["n"]))

    asgi = TestClient(AsgiMiddleware(Starlette(routes=[Route("/count", count)]), manager))
    answer = asgi.get("/count", headers={"X-Session-Id": session_id})
    assert answer.text == "2" and "set-cookie" not in answer.headers

    web = flask.Flask(__name__)
    init_app(web, manager)

    @web.route("/count")
    def flask_count() -> str:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    with web.test_client() as browser:
        reply = browser.get("/count", headers={"X-Session-Id": session_id})
        assert reply.text == "3" and "Set-Cookie" not in reply.headers
        assert reply.headers["Vary"] == "X-Session-Id"
        fresh = browser.get("/count")
        assert fresh.text == "1" and fresh.headers["X-Session-Id"] != session_id


def test_a_replica_over_the_managers_header_transport_is_refused_at_construction(
    app_id: str,
) -> None:
    with pytest.raises(ConfigError, match="carries no replica"):
        SessionManager(
            "memory://", app_id=app_id, replica=True,
            secret_keys=["callable-transport-test-key-0123456789abcdef"],
            transport=HeaderTransport(),
        )  # fmt: skip
