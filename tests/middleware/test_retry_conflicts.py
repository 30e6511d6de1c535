"""``SessionMiddleware(retry_conflicts=N)``: re-running a request whose save conflicted.

The conflict is made deterministic: while the application runs, it lets a
"concurrent" request of the same session commit a change to the key it read.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from werkzeug.test import Client

from shoal import ConfigError, ManualClock, SessionManager
from shoal.stores.base import Store
from shoal.stores.memory import MemoryStore
from shoal.wsgi import SessionMiddleware

Environ = dict[str, Any]


class CounterApp:
    """Increments ``n``; the first ``interfere`` runs lose a race on ``n``."""

    def __init__(self, manager: SessionManager, *, interfere: int, lazy: bool = False) -> None:
        self.manager = manager
        self.interfere = interfere
        self.lazy = lazy
        self.bodies: list[bytes] = []

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = environ["wsgi.input"].read()
        self.bodies.append(body)
        attempt = len(self.bodies)
        session = environ["shoal.session"]
        n = session.get("n", 0)
        if attempt <= self.interfere and not session.is_new:
            with self.manager.open(session.id) as other:
                other["n"] = n + 100
        session["n"] = n + 1
        headers = [("Content-Type", "text/plain"), ("X-Attempt", str(attempt))]
        answer = b"attempt %d n=%d body=%s" % (attempt, n + 1, body)
        if self.lazy:
            return self._lazy(start_response, headers, answer)
        start_response("200 OK", headers)
        return [answer]

    @staticmethod
    def _lazy(start_response: Callable[..., Any], headers: list[Any], answer: bytes) -> Iterator[bytes]:
        start_response("200 OK", headers)
        yield answer


def make_manager(store: Store, clock: ManualClock, app_id: str) -> SessionManager:
    return SessionManager(store, app_id=app_id, clock=clock, policy="optimistic")


def session_cookie(manager: SessionManager) -> str:
    with manager.open() as session:
        session["n"] = 0
    return f"{manager.cookie.name}={session.id}"


class Recorder:
    """A server's start_response that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.calls.append((status, headers))
        return lambda data: None


def environ_for(cookie: str, body: bytes, **extra: Any) -> Environ:
    environ: Environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "HTTP_COOKIE": cookie,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
    }
    environ.update(extra)
    return environ


def call(app: SessionMiddleware, environ: Environ) -> tuple[Recorder, bytes]:
    recorder = Recorder()
    result = app(environ, recorder)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return recorder, body


@pytest.mark.parametrize("lazy", [False, True], ids=["start-then-return", "start-in-body"])
def test_a_conflict_reruns_the_request_and_sends_one_response(
    store: Store, clock: ManualClock, app_id: str, lazy: bool, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(store, clock, app_id)
    cookie = session_cookie(manager)
    inner = CounterApp(manager, interfere=1, lazy=lazy)
    app = SessionMiddleware(inner, manager, retry_conflicts=2)
    with caplog.at_level(logging.INFO, logger="shoal"):
        recorder, body = call(app, environ_for(cookie, b"form=1"))
    retried = f"node {manager.node_id}: session conflict; running the request again (retry 1)"
    assert retried in caplog.messages
    assert len(recorder.calls) == 1, "the failed run's response was never started"
    status, headers = recorder.calls[0]
    assert status == "200 OK" and ("X-Attempt", "2") in headers
    assert inner.bodies == [b"form=1", b"form=1"], "each run read the whole body"
    assert body == b"attempt 2 n=101 body=form=1"
    with manager.open(cookie.split("=", 1)[1]) as session:
        assert session["n"] == 101, "the concurrent write and the re-run both count"


def test_a_conflict_after_the_last_retry_is_a_409(
    store: Store, clock: ManualClock, app_id: str
) -> None:
    manager = make_manager(store, clock, app_id)
    cookie = session_cookie(manager)
    inner = CounterApp(manager, interfere=10)
    recorder, body = call(
        SessionMiddleware(inner, manager, retry_conflicts=2), environ_for(cookie, b"x")
    )
    assert [c[0] for c in recorder.calls] == ["409 Conflict"]
    assert len(inner.bodies) == 3 and b"retry" in body


@pytest.fixture
def memory_manager(clock: ManualClock, app_id: str) -> SessionManager:
    return make_manager(MemoryStore(), clock, app_id)


def test_a_body_over_the_limit_runs_once_and_conflicts_with_409(
    memory_manager: SessionManager,
) -> None:
    cookie = session_cookie(memory_manager)
    inner = CounterApp(memory_manager, interfere=1)
    app = SessionMiddleware(inner, memory_manager, retry_conflicts=3, max_replay_body=4)
    recorder, _ = call(app, environ_for(cookie, b"12345"))
    assert [c[0] for c in recorder.calls] == ["409 Conflict"]
    assert inner.bodies == [b"12345"], "the app read the body from the original stream"


def test_a_chunked_body_of_unknown_length_is_not_replayed(memory_manager: SessionManager) -> None:
    cookie = session_cookie(memory_manager)
    inner = CounterApp(memory_manager, interfere=1)
    app = SessionMiddleware(inner, memory_manager, retry_conflicts=3)
    environ = environ_for(
        cookie, b"chunked", CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked"
    )
    environ["wsgi.input_terminated"] = True
    recorder, _ = call(app, environ)
    assert [c[0] for c in recorder.calls] == ["409 Conflict"]
    assert inner.bodies == [b"chunked"]


def test_a_request_without_a_body_is_retried_under_a_terminating_server(
    memory_manager: SessionManager,
) -> None:
    """gunicorn sets ``wsgi.input_terminated`` on every request, GETs included."""
    cookie = session_cookie(memory_manager)
    inner = CounterApp(memory_manager, interfere=1)
    app = SessionMiddleware(inner, memory_manager, retry_conflicts=2)
    environ = environ_for(cookie, b"", REQUEST_METHOD="GET", **{"wsgi.input_terminated": True})
    del environ["CONTENT_LENGTH"]
    recorder, body = call(app, environ)
    assert [c[0] for c in recorder.calls] == ["200 OK"]
    assert inner.bodies == [b"", b""] and body == b"attempt 2 n=101 body="


@pytest.mark.parametrize("length", ["abc", "-1"])
def test_an_invalid_length_is_left_to_the_application(
    memory_manager: SessionManager, length: str
) -> None:
    inner = CounterApp(memory_manager, interfere=0)
    app = SessionMiddleware(inner, memory_manager, retry_conflicts=1)
    recorder, _ = call(app, environ_for("", b"raw", CONTENT_LENGTH=length))
    assert [c[0] for c in recorder.calls] == ["200 OK"] and inner.bodies == [b"raw"]


def test_without_retries_the_body_stream_is_untouched(memory_manager: SessionManager) -> None:
    seen: list[object] = []

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.append(environ["wsgi.input"])
        start_response("200 OK", [])
        return [b""]

    environ = environ_for("", b"body")
    stream = environ["wsgi.input"]
    call(SessionMiddleware(app, memory_manager), environ)
    assert seen == [stream]


def test_a_body_that_cannot_be_read_is_a_400(memory_manager: SessionManager) -> None:
    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise OSError("client went away")

    inner = CounterApp(memory_manager, interfere=0)
    app = SessionMiddleware(inner, memory_manager, retry_conflicts=1)
    recorder, body = call(app, environ_for("", b"", CONTENT_LENGTH="10", **{"wsgi.input": Broken()}))
    assert [c[0] for c in recorder.calls] == ["400 Bad Request"] and not inner.bodies
    assert body == b"Request body incomplete.\n"


def test_through_a_real_wsgi_client(memory_manager: SessionManager) -> None:
    inner = CounterApp(memory_manager, interfere=2)  # run 1 creates the session
    client = Client(SessionMiddleware(inner, memory_manager, retry_conflicts=1))
    first = client.post("/", data=b"a")
    assert first.status_code == 200
    second = client.post("/", data=b"payload")
    assert second.status_code == 200 and second.headers["X-Attempt"] == "3"
    assert second.get_data() == b"attempt 3 n=102 body=payload"


@pytest.mark.parametrize("middleware", ["wsgi", "asgi"])
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"retry_conflicts": -1}, id="negative-retries"),
        pytest.param({"max_replay_body": -1}, id="negative-body"),
        pytest.param({"retry_conflicts": True}, id="bool-retries"),
        pytest.param({"retry_conflicts": "3"}, id="str-retries"),
        pytest.param({"max_replay_body": 1.5}, id="float-body"),
    ],
)
def test_bad_replay_options_are_refused_by_both_middlewares(
    memory_manager: SessionManager, middleware: str, options: dict[str, Any]
) -> None:
    if middleware == "wsgi":
        make: Callable[..., object] = SessionMiddleware
    else:
        from shoal.asgi import SessionMiddleware as make
    with pytest.raises(ConfigError, match="retry_conflicts and max_replay_body"):
        make(lambda *args: None, memory_manager, **options)
