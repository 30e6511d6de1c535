"""One session carried across the workers of a real multi-process WSGI server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from shoal.stores.sqlite import SQLiteStore

from ._servers import get, running_gunicorn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[tuple[int, str]]:
    with serve(tmp_path, "app", workers=2) as served:
        yield served


@contextmanager
def serve(tmp_path: Path, app: str, *, workers: int) -> Iterator[tuple[int, str]]:
    """gunicorn serving ``tests.processes.gunicorn_app:<app>``; yields (port, store URL)."""
    url = f"sqlite://{tmp_path / 'sessions.db'}"
    env = {**os.environ, "SHOAL_STORE": url, "PYTHONPATH": str(ROOT)}
    with running_gunicorn(
        f"tests.processes.gunicorn_app:{app}", cwd=ROOT, env=env, workers=workers
    ) as port:
        yield port, url


def request(
    port: int, cookie: str | None, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], str | None]:
    answer = get(port, cookie, headers)
    assert answer.status == 200, (answer.status, answer.body)
    return orjson.loads(answer.body), answer.cookie


def test_one_session_across_two_gunicorn_workers(gunicorn: tuple[int, str]) -> None:
    port, url = gunicorn
    first, cookie = request(port, None)
    assert cookie is not None and first["n"] == 1
    # Two clients at once on one session: each request holds it ~20 ms, so
    # the second connection is served by the other worker.
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda _: request(port, cookie)[0], range(30)))
    final, _ = request(port, cookie)
    assert final["n"] == 32, "serialized: no increment lost across processes"
    assert len(set(final["pids"])) == 2, f"served by {final['pids']}"
    assert {a["pid"] for a in answers} == set(final["pids"])
    listed = list(SQLiteStore.from_url(url).records("gunicorn"))
    assert len(listed) == 1


def test_retry_conflicts_reruns_a_get_under_gunicorn(tmp_path: Path) -> None:
    """gunicorn marks every request's input terminated; a GET still has no body to keep."""
    with serve(tmp_path, "retry_app", workers=1) as (port, _):
        first, cookie = request(port, None, {"X-Request-Id": "create"})
        assert cookie is not None and first == {"n": 1, "runs": 1}
        retried, _ = request(port, cookie, {"X-Request-Id": "conflicted"})
        assert retried == {"n": 102, "runs": 2}, "the conflicted GET ran again"
