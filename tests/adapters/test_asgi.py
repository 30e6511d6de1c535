"""The ASGI middleware under Starlette: sessions across requests, errors, pass-through, the loop.

Starlette's ``TestClient`` carries the cookies. The loop-lag tests (a stalled
store never stalls the loop) are in test_asgi_loop_lag.py.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from shoal import ConfigError, SessionManager, SessionStateError, StoreUnavailable
from shoal.asgi import SCOPE_KEY, SessionDict, SessionMiddleware
from shoal.stores import open_store
from shoal.stores.base import Store
from shoal.transports import HeaderTransport
from tests._counting import CountingStore
from tests.processes._servers import get, running_uvicorn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(local_store: Store) -> CountingStore:
    return CountingStore(local_store)


async def counter(request: Request) -> Response:
    request.session["n"] = request.session.get("n", 0) + 1
    return PlainTextResponse(f"n={request.session['n']}")


async def dump(request: Request) -> Response:
    return PlainTextResponse(json.dumps(request.session, sort_keys=True))


async def merge(request: Request) -> Response:
    # ``request.session |= ...`` is an AttributeError with any middleware
    # (Request.session has no setter); the dict itself takes ``|=``.
    session = request.session
    session |= {"a": 1, "b": [1, 2]}
    assert session is request.session
    return JSONResponse(request.session)


async def nothing(request: Request) -> Response:
    return PlainTextResponse("no session")


async def peek(request: Request) -> Response:
    return PlainTextResponse(f"n={request.session.get('n')}")


async def boom(request: Request) -> Response:
    request.session["n"] = 1000
    raise ValueError("view failed")


def make_app(manager: SessionManager, **options: Any) -> Starlette:
    routes = [
        Route(path, view, methods=["GET", "POST"])
        for path, view in [
            ("/", counter), ("/dump", dump), ("/merge", merge), ("/nothing", nothing),
            ("/peek", peek), ("/boom", boom),
        ]
    ]  # fmt: skip
    return Starlette(
        routes=routes, middleware=[Middleware(SessionMiddleware, manager=manager, **options)]
    )


def test_counter_carries_across_requests(store: CountingStore, app_id: str) -> None:
    client = TestClient(make_app(SessionManager(store, app_id=app_id)))
    first = client.get("/")
    assert first.text == "n=1"
    assert "set-cookie" in first.headers and first.headers["vary"] == "Cookie"
    assert [client.get("/").text for _ in range(3)] == ["n=2", "n=3", "n=4"]
    assert TestClient(client.app).get("/").text == "n=1"  # another browser, another session


def test_request_session_is_a_real_dict(store: CountingStore, app_id: str) -> None:
    client = TestClient(make_app(SessionManager(store, app_id=app_id)))
    assert client.get("/dump").text == "{}"
    assert client.get("/merge").json() == {"a": 1, "b": [1, 2]}
    client.get("/")
    assert json.loads(client.get("/dump").text) == {"a": 1, "b": [1, 2], "n": 1}


def test_session_dict_behaves_as_a_dict(app_id: str) -> None:
    manager = SessionManager("memory://", app_id=app_id)
    session = manager.begin(None)
    view = SessionDict(session)
    assert not session.loaded  # no cookie: nothing is made before first use
    assert isinstance(view, dict) and view == {} and not view
    view |= {"a": 1}
    view.update(b=[1])
    view.setdefault("c", {}).update(x=1)  # in place, after the set
    view["b"].append(2)
    assert view == {"a": 1, "b": [1, 2], "c": {"x": 1}} and len(view) == 3
    assert view | {"d": 4} == {"a": 1, "b": [1, 2], "c": {"x": 1}, "d": 4}
    assert type(view | {}) is dict and type(view.copy()) is dict
    assert type(copy.deepcopy(view)) is dict
    assert view.pop("a") == 1 and view.pop("a", None) is None
    assert json.loads(json.dumps(view)) == {"b": [1, 2], "c": {"x": 1}}
    session.set("t", 5, ttl=60)  # through the shoal session: seen by the view
    assert view["t"] == 5 and "t" in view and dict(view)["t"] == 5
    manager.commit(session)
    assert view["b"] == [1, 2]  # readable after the commit
    with pytest.raises(SessionStateError):
        view["late"] = 1
    assert "late" not in dict.keys(view)
    with manager.open(session.id, read_only=True) as saved:
        assert dict(saved) == {"b": [1, 2], "c": {"x": 1}, "t": 5}


def test_no_store_io_without_a_cookie(store: CountingStore, app_id: str) -> None:
    client = TestClient(make_app(SessionManager(store, app_id=app_id)))
    for path in ["/nothing", "/peek", "/dump"]:
        response = client.get(path)
        assert response.status_code == 200
        assert "set-cookie" not in response.headers
    assert store.calls == []
    client.get("/")  # the first write stores it
    assert store.calls == ["create"]


async def login(request: Request) -> Response:
    request.scope[SCOPE_KEY].rotate(grace=0)  # at login: the pre-login id dies at once
    request.session["user"] = "ada"
    return PlainTextResponse("in")


async def logout(request: Request) -> Response:
    request.scope[SCOPE_KEY].invalidate()
    return PlainTextResponse("out")


def test_the_header_transport_carries_the_id_in_x_session_id(
    store: CountingStore, app_id: str
) -> None:
    manager = SessionManager(store, app_id=app_id)
    app = Starlette(
        routes=[Route("/", counter), Route("/peek", peek), Route("/login", login),
                Route("/logout", logout)],
        middleware=[Middleware(SessionMiddleware, manager=manager, transport=HeaderTransport())],
    )  # fmt: skip
    client = TestClient(app)

    def get(path: str, session_id: str | None = None) -> Any:  # starlette's own httpx
        headers = {} if session_id is None else {"X-Session-Id": session_id}
        response = client.get(path, headers=headers)
        assert response.status_code == 200 and "set-cookie" not in response.headers
        return response

    first = get("/")
    session_id = first.headers["x-session-id"]
    assert first.text == "n=1" and first.headers["vary"] == "X-Session-Id"
    assert [get("/", session_id).text for _ in range(2)] == ["n=2", "n=3"]
    assert get("/peek").text == "n=None"  # no header, no session
    rotated = get("/login", session_id).headers["x-session-id"]
    assert rotated != session_id and get("/peek", rotated).text == "n=3"
    assert get("/peek", session_id).headers["x-session-id"] == ""  # the old id: drop it
    assert get("/logout", rotated).headers["x-session-id"] == ""
    store.calls.clear()
    for bad in ["A" * 42, "A" * 5000, f"{rotated}, {rotated}"]:
        response = get("/peek", bad)
        assert response.text == "n=None"
    assert store.calls == []  # malformed or oversized: never reaches the store
    chosen = "B" * 43  # well-formed, unknown: looked up once, never adopted
    assert get("/", chosen).headers["x-session-id"] != chosen


def test_a_cookie_request_loads_before_the_view(store: CountingStore, app_id: str) -> None:
    client = TestClient(make_app(SessionManager(store, app_id=app_id)))
    client.get("/")
    store.calls.clear()
    assert client.get("/nothing").text == "no session"
    assert store.calls == ["load"]  # one round trip; nothing to save


def test_exception_rolls_back_and_frees_the_lock(store: CountingStore, app_id: str) -> None:
    manager = SessionManager(store, app_id=app_id, policy="serialized", lock_timeout=0)
    client = TestClient(make_app(manager), raise_server_exceptions=False)
    assert client.get("/").text == "n=1"
    assert client.get("/boom").status_code == 500
    assert store.calls.count("unlock") == 1
    # lock_timeout=0: a lease left behind would be a 503 at once.
    assert client.get("/").text == "n=2"


class FailingStore:
    """A real store whose loads (and creates) fail as an unreachable one would."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.failing = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in ("load", "create", "apply") and callable(attr):
            def maybe_fail(*args: Any, **kwargs: Any) -> Any:
                if self.failing:
                    raise StoreUnavailable(self.url, "test outage")
                return attr(*args, **kwargs)
            return maybe_fail
        return attr


def test_store_outage_is_a_503(app_id: str) -> None:
    store = FailingStore(open_store("memory://"))
    client = TestClient(make_app(SessionManager(store, app_id=app_id)))
    assert client.get("/").text == "n=1"
    store.failing = True
    for path in ["/", "/nothing"]:  # at load (a cookie is sent)
        response = client.get(path)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.text == "Session store unavailable.\n"
    fresh = TestClient(client.app)
    response = fresh.get("/")  # at commit (a new session's create)
    assert (response.status_code, response.text) == (503, "Session store unavailable.\n")
    assert "set-cookie" not in response.headers


def test_lock_held_elsewhere_is_a_503_with_retry_after(app_id: str) -> None:
    manager = SessionManager("memory://", app_id=app_id, policy="serialized", lock_timeout=0.2)
    client = TestClient(make_app(manager))
    client.get("/")
    held = manager.begin(client.cookies["shoal"], lazy=False)
    try:
        response = client.get("/")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
    finally:
        manager.rollback(held)
    assert client.get("/").text == "n=2"


def conflicting_app(manager: SessionManager, runs: list[int], **options: Any) -> Starlette:
    async def view(request: Request) -> Response:
        runs.append(len(await request.body()))
        n = request.session.get("n", 0)
        if len(runs) == 1:  # another request writes the key in between, once
            with manager.open(request.cookies["shoal"]) as other:
                other["n"] = 100
        request.session["n"] = n + 1
        return PlainTextResponse(f"n={request.session['n']}")

    return Starlette(
        routes=[Route("/", view, methods=["GET", "POST"])],
        middleware=[Middleware(SessionMiddleware, manager=manager, **options)],
    )


def test_conflict_is_a_409_without_retries(app_id: str) -> None:
    manager = SessionManager("memory://", app_id=app_id, policy="optimistic")
    runs: list[int] = []
    client = TestClient(conflicting_app(manager, runs))
    client.cookies.set("shoal", _stored(manager, n=1))
    response = client.post("/", content=b"body")
    assert (response.status_code, response.text) == (409, "Session changed concurrently, retry.\n")
    assert runs == [4]


def test_retry_conflicts_reruns_with_the_body_replayed(
    app_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager = SessionManager("memory://", app_id=app_id, policy="optimistic", node_id="web-4")
    runs: list[int] = []
    client = TestClient(conflicting_app(manager, runs, retry_conflicts=1))
    client.cookies.set("shoal", _stored(manager, n=1))
    with caplog.at_level(logging.INFO, logger="shoal"):
        response = client.post("/", content=b"body")
    assert (response.status_code, response.text) == (200, "n=101")
    assert runs == [4, 4]  # the second run read the same body
    assert "node web-4: session conflict; running the request again (retry 1)" in caplog.messages


def test_retry_conflicts_config() -> None:
    manager = SessionManager("memory://")
    with pytest.raises(ConfigError, match="retry_conflicts"):
        SessionMiddleware(nothing, manager, retry_conflicts=-1)  # type: ignore[arg-type]


def _stored(manager: SessionManager, **values: Any) -> str:
    with manager.open() as session:
        session.update(values)
    return session.id


def test_write_after_the_response_started_raises(app_id: str) -> None:
    seen: list[object] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = scope["session"]
        session["a"] = 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        seen.append(session["a"])  # still readable
        try:
            session["b"] = 2
        except SessionStateError as exc:
            seen.append(str(exc))
        await send({"type": "http.response.body", "body": b"ok"})

    manager = SessionManager("memory://", app_id=app_id)
    response = TestClient(SessionMiddleware(app, manager)).get("/")
    assert response.status_code == 200 and "set-cookie" in response.headers
    assert seen[0] == 1 and "http.response.start" in str(seen[1])


def test_websocket_and_lifespan_pass_through(app_id: str) -> None:
    scopes: list[dict[str, Any]] = []

    async def ws(websocket: WebSocket) -> None:
        scopes.append(dict(websocket.scope))
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        scopes.append({"type": "lifespan-ran"})
        yield

    store = CountingStore(open_store("memory://"))
    app = Starlette(
        routes=[WebSocketRoute("/ws", ws)],
        middleware=[Middleware(SessionMiddleware, manager=SessionManager(store, app_id=app_id))],
        lifespan=lifespan,
    )
    with TestClient(app) as client:  # runs the lifespan protocol
        client.cookies.set("shoal", "x" * 43)
        with client.websocket_connect("/ws") as socket:
            assert socket.receive_text() == "hello"
    assert scopes[0] == {"type": "lifespan-ran"}
    assert scopes[1]["type"] == "websocket"
    assert "session" not in scopes[1] and "shoal.session" not in scopes[1]
    assert store.calls == []


def test_one_session_across_two_uvicorn_workers(tmp_path: Path) -> None:
    """8 clients x 25 increments of one session under serialized, 2 uvicorn workers: exact."""
    url = f"sqlite://{tmp_path / 'sessions.db'}"
    env = {**os.environ, "SHOAL_STORE": url, "PYTHONPATH": str(ROOT)}
    with running_uvicorn("tests.adapters.uvicorn_app:app", cwd=ROOT, env=env, workers=2) as port:
        first = get(port)
        assert first.status == 200 and first.cookie is not None

        def client(_: int) -> set[int]:
            pids = set()
            for _ in range(25):
                answer = get(port, first.cookie)
                assert answer.status == 200, (answer.status, answer.body)
                pids.add(json.loads(answer.body)["pid"])
            return pids

        with ThreadPoolExecutor(max_workers=8) as pool:
            served = set().union(*pool.map(client, range(8)))
        final = json.loads(get(port, first.cookie).body)
    assert final["n"] == 1 + 8 * 25 + 1, "serialized: no increment lost across processes"
    assert len(set(final["pids"])) == 2 and served <= set(final["pids"])
