"""The examples under their real servers with two workers: the session carries, nothing is lost.

Each example in examples/ is started as its docstring says (gunicorn for
WSGI, Flask and Django; uvicorn for FastAPI) on a private SQLite file; 8
concurrent clients then make 100 increments each on one session under the
``serialized`` policy, and the count ends exact, served by both workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
import pytest

from ..processes._servers import get, running_gunicorn, running_uvicorn
from ._increments import check_increments

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CLIENTS = 8
INCREMENTS = 100

Server = Callable[[dict[str, str]], AbstractContextManager[int]]


def _gunicorn(app: str, cwd: Path) -> Server:
    return lambda env: running_gunicorn(app, cwd=cwd, env=env, workers=2)


SERVERS: dict[str, Server] = {
    "wsgi": _gunicorn("wsgi_app:app", EXAMPLES),
    "django": _gunicorn("wsgi:application", EXAMPLES / "django_project"),
    "fastapi": lambda env: running_uvicorn("fastapi_app:app", cwd=EXAMPLES, env=env, workers=2),
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The example's environment: a private embedded store, this checkout's shoal."""
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "SHOAL_STORE": f"sqlite://{tmp_path / 'sessions.db'}",
            "PYTHONPATH": path}  # fmt: skip


@pytest.fixture(params=sorted(SERVERS))
def example(request: pytest.FixtureRequest, env: dict[str, str]) -> Iterator[int]:
    with SERVERS[request.param](env) as port:
        yield port


def test_concurrent_increments_across_two_workers_are_exact(example: int) -> None:
    final, _ = check_increments(example, clients=CLIENTS, increments=INCREMENTS)
    assert len(final["pids"]) == 2, f"served by {final['pids']}"


def test_the_flask_example_carries_the_session(env: dict[str, str]) -> None:
    with running_gunicorn("flask_app:app", cwd=EXAMPLES, env=env, workers=2) as port:
        first = get(port)
        assert first.status == 200 and b"visit 1" in first.body and first.cookie
        pages = [get(port, first.cookie).body for _ in range(6)]
    assert [b"visit %d" % n in page for n, page in enumerate(pages, 2)] == [True] * 6
