"""``shoal.fastapi``: the per-route dependency, through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from shoal import ConfigError, SessionManager, SessionStateError
from shoal.fastapi import SessionRoute, session_dependency
from shoal.session import Session
from shoal.stores.base import Store


@pytest.fixture
def manager(local_store: Store, app_id: str) -> SessionManager:
    return SessionManager(local_store, app_id=app_id, lock_timeout=0.2)


def make_app(manager: SessionManager) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await manager.aclose()  # the async store's clients, on the loop that made them

    app = FastAPI(lifespan=lifespan)
    app.router.route_class = SessionRoute
    locked = session_dependency(manager, policy="serialized")
    reading = session_dependency(manager, read_only=True)

    @app.post("/count")
    def count(session: Session = Depends(locked)) -> int:
        session["n"] = session.get("n", 0) + 1
        return int(session["n"])

    @app.get("/read")
    async def read(session: Session = Depends(reading)) -> int:
        return int(session.get("n", 0))

    @app.post("/write-read-only")
    def write(session: Session = Depends(reading)) -> None:
        session["n"] = 99

    @app.post("/fail")
    def fail(session: Session = Depends(locked)) -> None:
        session["n"] = -1
        raise ValueError("the endpoint failed")

    return app


@pytest.fixture
def client(manager: SessionManager) -> Iterator[TestClient]:
    with TestClient(make_app(manager)) as test_client:
        yield test_client


def test_a_counter_on_every_store_kind(store_url: str, app_id: str) -> None:
    """Built from the URL, as an application does: Redis and PostgreSQL on their async clients."""
    manager = SessionManager(store_url, app_id=app_id, lock_timeout=5.0)
    with TestClient(make_app(manager)) as client:
        assert [client.post("/count").json() for _ in range(3)] == [1, 2, 3]
        assert client.get("/read").json() == 3


def test_the_session_carries_between_requests(client: TestClient) -> None:
    assert client.post("/count").json() == 1
    assert list(client.cookies) == ["shoal"]  # the manager's cookie name
    assert client.post("/count").json() == 2
    assert client.get("/read").json() == 2


def test_read_only_refuses_writes_and_saves_nothing(client: TestClient) -> None:
    client.post("/count")
    with pytest.raises(SessionStateError, match="read_only"):
        client.post("/write-read-only")
    assert client.get("/read").json() == 1


def test_a_failing_endpoint_rolls_back_and_frees_the_lease(client: TestClient) -> None:
    client.post("/count")
    with pytest.raises(ValueError, match="endpoint failed"):
        client.post("/fail")
    assert client.post("/count").json() == 2  # not locked out, -1 not saved


def test_a_held_lease_answers_503(client: TestClient, manager: SessionManager) -> None:
    client.post("/count")
    sid = next(iter(client.cookies.values()))
    holder = manager.begin(sid, policy="serialized", lazy=False)
    try:
        busy = client.post("/count")
    finally:
        manager.rollback(holder)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert client.post("/count").json() == 2


def test_without_the_route_class_the_error_names_it(manager: SessionManager) -> None:
    app = FastAPI()

    @app.get("/")
    def index(session: Session = Depends(session_dependency(manager))) -> None:
        return None

    with TestClient(app) as bare, pytest.raises(ConfigError, match="route_class"):
        bare.get("/")


def test_read_only_with_a_lock_is_refused(manager: SessionManager) -> None:
    with pytest.raises(ConfigError, match="read_only"):
        session_dependency(manager, read_only=True, policy="serialized")
