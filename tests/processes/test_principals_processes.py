"""Sessions by user across real processes, on SQLite, Redis and PostgreSQL.

gunicorn worker processes serve the logins and the requests; the test
process (another process, with a manager of its own) or a spawned worker
calls ``invalidate_all``. Nothing is shared but the store.
"""

from __future__ import annotations

import http.client
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shoal import SessionManager
from shoal.ids import hash_id
from shoal.stores.base import LoadStatus, RecordKey

from ..conftest import STORE_KINDS
from . import _workers as w
from ._servers import running_gunicorn

ROOT = Path(__file__).resolve().parents[2]
KINDS = ["sqlite", "redis", "postgresql"]
REQUESTS = 12  # per check: enough fresh connections that both workers answer


@pytest.fixture(params=KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return STORE_KINDS[str(request.param)](request, tmp_path)


@pytest.fixture
def app_id() -> str:
    return f"u{uuid.uuid4().hex[:12]}"


@pytest.fixture
def nodes(store_url: str, app_id: str) -> Iterator[tuple[int, int]]:
    """Two app nodes (a gunicorn with one worker each) on one store: their ports."""
    # ROOT for the tests package, then the caller's path (the tree under test).
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "SHOAL_STORE": store_url, "SHOAL_TEST_APP": app_id, "PYTHONPATH": path}
    app = "tests.processes.principals_app:app"
    with running_gunicorn(app, cwd=ROOT, env=env, workers=1) as one:
        with running_gunicorn(app, cwd=ROOT, env=env, workers=1) as two:
            yield one, two


def call(port: int, path: str, cookie: str | None = None) -> tuple[dict[str, Any], str | None]:
    """One GET on a fresh connection (either worker may take it); (json, new cookie)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(
            {"Cookie": cookie} if cookie else {})})
        response = conn.getresponse()
        body = response.read()
        set_cookie = response.getheader("Set-Cookie")
    finally:
        conn.close()
    assert response.status == 200, (response.status, body)
    return orjson.loads(body), set_cookie.split(";")[0] if set_cookie else None


def login(port: int, user: str, device: str) -> str:
    answer, cookie = call(port, f"/login?user={user}&device={device}")
    assert cookie is not None and answer["user"] == user
    return cookie


def test_invalidate_all_in_one_process_ends_the_sessions_served_by_others(
    nodes: tuple[int, int], store_url: str, app_id: str
) -> None:
    one, two = nodes
    phone, laptop = login(one, "ada", "phone"), login(two, "ada", "laptop")
    bob = login(one, "bob", "phone")
    pids = set()
    for port in nodes:  # each node serves the sessions the other logged in
        for cookie, device in ((phone, "phone"), (laptop, "laptop")):
            answer, _ = call(port, "/", cookie)
            assert (answer["user"], answer["device"]) == ("ada", device)
            pids.add(answer["pid"])
    assert len(pids) == 2 and os.getpid() not in pids
    manager = SessionManager(store_url, app_id=app_id, node_id="admin")
    try:
        assert manager.invalidate_all("ada") == 2
        # At once: the very next request, on either node, is logged out.
        for port in nodes:
            for cookie in (phone, laptop):
                answer, _ = call(port, "/", cookie)
                assert answer["user"] is None and answer["device"] is None
        assert call(two, "/", bob)[0]["user"] == "bob"
        assert manager.sessions_of("ada") == []
    finally:
        manager.close()


def test_logout_everywhere_from_one_device_ends_the_other(nodes: tuple[int, int]) -> None:
    one, two = nodes
    phone, laptop = login(one, "ada", "phone"), login(two, "ada", "laptop")
    answer, _ = call(two, "/logout-everywhere", laptop)
    assert answer["ended"] == 2
    for port in nodes:
        for cookie in (phone, laptop):
            assert call(port, "/", cookie)[0]["user"] is None


LOGINS = 5  # per worker process
WORKERS = 4


def test_max_sessions_per_principal_holds_under_concurrent_logins(
    store_url: str, app_id: str
) -> None:
    crew = w.Crew(threads=False)
    start = crew.barrier(WORKERS)
    try:
        workers = [
            crew.start(f"login-{i}", w.logins, store_url, app_id, "ada", LOGINS, 3,
                       f"node-{i}", start)  # fmt: skip
            for i in range(WORKERS)
        ]
        made = [sid for worker in workers for sid in worker.result()]
    finally:
        crew.stop_all()
    manager = SessionManager(store_url, app_id=app_id, max_sessions_per_principal=3)
    try:
        live = {info.key.id_hash for info in manager.sessions_of("ada")}
        assert 1 <= len(live) <= 3, live
        now = time.time()
        for sid in made:
            status = manager.store.load(RecordKey(app_id, hash_id(sid)), now=now).status
            expected = LoadStatus.LOADED if hash_id(sid) in live else LoadStatus.INVALIDATED
            assert status is expected
    finally:
        manager.close()
