"""What the WSGI middleware answers when a shoal error escapes the application.

Store errors are the operator's: a short 503 (or 409 for a lost race), never a
traceback. A misuse of the session is the programmer's: it propagates like any
other exception from the view, so the server (or the framework's error
handler, or the debugger) turns it into a 500 with the real traceback.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.handlers import SimpleHandler

import pytest
from werkzeug.test import Client

from shoal import (
    ConflictError,
    EncodeError,
    LockLost,
    LockTimeout,
    ManualClock,
    SessionManager,
    SessionStateError,
    StoreUnavailable,
)
from shoal.stores.memory import MemoryStore
from shoal.wsgi import SessionMiddleware

Environ = dict[str, Any]
View = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]


@pytest.fixture
def manager(clock: ManualClock, app_id: str) -> SessionManager:
    return SessionManager(MemoryStore(), app_id=app_id, clock=clock)


def ok(start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def write_after_commit(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Starts the response (the session is committed), then writes to it."""
    session = environ["shoal.session"]
    session["a"] = 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    session["b"] = 2
    return [b"never sent"]


def write_read_only(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    manager: SessionManager = environ["test.manager"]
    with manager.open(environ["shoal.session"].id, read_only=True) as session:
        session["a"] = 1
    return ok(start_response)


def lock_after_load(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = environ["shoal.session"]
    session.get("a")
    session.lock()
    return ok(start_response)


def unencodable_value(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["shoal.session"]["a"] = object()
    return ok(start_response)


@pytest.mark.parametrize(
    ("view", "error"),
    [
        pytest.param(write_after_commit, SessionStateError, id="write-after-commit"),
        pytest.param(write_read_only, SessionStateError, id="write-read-only"),
        pytest.param(lock_after_load, SessionStateError, id="lock-after-load"),
        pytest.param(unencodable_value, EncodeError, id="unencodable-value"),
    ],
)
def test_session_misuse_propagates_and_is_logged(
    manager: SessionManager,
    view: View,
    error: type[Exception],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["test.manager"] = manager
        return view(environ, start_response)

    client = Client(SessionMiddleware(app, manager))
    with caplog.at_level(logging.INFO, logger="shoal"), pytest.raises(error):
        client.get("/")
    [record] = [r for r in caplog.records if r.name == "shoal"]
    assert record.levelno == logging.ERROR and error.__name__ in record.getMessage()
    assert "unavailable" not in record.getMessage()


def test_a_real_server_answers_session_misuse_with_a_500(manager: SessionManager) -> None:
    """wsgiref stands for any WSGI server: the response it had started is replaced."""
    out, err = io.BytesIO(), io.StringIO()
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1"}
    handler = SimpleHandler(io.BytesIO(), out, err, environ, multithread=False)
    handler.run(SessionMiddleware(write_after_commit, manager))
    response = out.getvalue()
    assert response.split(b"\r\n", 1)[0].endswith(b" 500 Internal Server Error"), response
    assert b"unavailable" not in response and b"Set-Cookie" not in response
    assert "SessionStateError" in err.getvalue(), "the server logged the real traceback"


def test_a_failed_commit_from_misuse_releases_the_lock(
    clock: ManualClock, app_id: str
) -> None:
    """An in-place edit that cannot be encoded fails at commit: the lease must not linger."""
    manager = SessionManager(
        MemoryStore(), app_id=app_id, clock=clock, policy="serialized", lock_timeout=0.05
    )
    with manager.open() as session:
        session["items"] = []
    sid = session.id

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["shoal.session"]["items"].append(object())
        return ok(start_response)

    client = Client(SessionMiddleware(app, manager))
    client.set_cookie(manager.cookie.name, sid)
    with pytest.raises(EncodeError):
        client.get("/")
    with manager.open(sid) as again:  # LockTimeout if the failed request kept its lease
        assert again["items"] == []


def _raising(exc: Exception) -> View:
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["shoal.session"]["touched"] = True
        raise exc

    return app


@pytest.mark.parametrize(
    ("exc", "status", "retry_after", "body"),
    [
        pytest.param(StoreUnavailable("memory://"), 503, "1", b"Session store unavailable.\n",
                     id="store-unavailable"),
        pytest.param(LockTimeout(2.4), 503, "2", b"Session busy, retry.\n", id="lock-timeout"),
        pytest.param(LockTimeout(0.01), 503, "1", b"Session busy, retry.\n",
                     id="lock-timeout-short"),
        pytest.param(ConflictError(["a"]), 409, None, b"Session changed concurrently, retry.\n",
                     id="conflict"),
        pytest.param(LockLost(), 409, None, b"Session changed concurrently, retry.\n",
                     id="lock-lost"),
    ],
)
@pytest.mark.parametrize("retry_conflicts", [0, 2], ids=["no-retry", "retry"])
def test_store_and_race_errors_keep_their_answers(
    manager: SessionManager,
    exc: Exception,
    status: int,
    retry_after: str | None,
    body: bytes,
    retry_conflicts: int,
) -> None:
    app = SessionMiddleware(_raising(exc), manager, retry_conflicts=retry_conflicts)
    response = Client(app).get("/")
    assert response.status_code == status
    assert response.headers.get("Retry-After") == retry_after
    assert response.get_data() == body
    assert "Set-Cookie" not in response.headers, "the session was rolled back"


def test_errors_raised_while_the_body_streams_are_not_rewritten(
    manager: SessionManager,
) -> None:
    """After the first chunk the response is the server's: every error propagates."""

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["shoal.session"]["a"] = 1
        start_response("200 OK", [])
        yield b"first"
        environ["shoal.session"]["b"] = 2

    client = Client(SessionMiddleware(app, manager))
    with pytest.raises(SessionStateError):
        client.get("/", buffered=True)
