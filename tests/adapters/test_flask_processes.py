"""One Flask session shared by the workers of a real gunicorn, under load."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from ..processes._servers import get, running_gunicorn

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 8
INCREMENTS = 25


def request(port: int, cookie: str | None) -> tuple[dict[str, Any], str | None]:
    answer = get(port, cookie)
    assert answer.status == 200, (answer.status, answer.body)
    return orjson.loads(answer.body), answer.cookie


def test_concurrent_increments_across_two_workers_are_all_kept(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_STORE": f"sqlite://{tmp_path / 'sessions.db'}",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    with running_gunicorn(
        "tests.adapters.flask_gunicorn_app:app", cwd=ROOT, env=env, workers=2
    ) as port:
        first, cookie = request(port, None)
        assert cookie is not None and cookie.startswith("session=") and first["n"] == 1

        def client(_: int) -> list[int]:
            return [request(port, cookie)[0]["n"] for _ in range(INCREMENTS)]

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            seen = [n for answers in pool.map(client, range(CLIENTS)) for n in answers]
        final, _ = request(port, cookie)
    total = 1 + CLIENTS * INCREMENTS
    assert sorted(seen) == list(range(2, total + 1)), "each increment saw its own count"
    assert final["n"] == total + 1, "serialized: no increment lost across processes"
    assert len(final["pids"]) == 2, f"served by {final['pids']}"
