"""One session carried across the workers of a real multi-process WSGI server."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from shoal.stores.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("gunicorn did not listen within the deadline")


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[tuple[int, str]]:
    yield from serve(tmp_path, "app", workers=2)


def serve(tmp_path: Path, app: str, *, workers: int) -> Iterator[tuple[int, str]]:
    """gunicorn serving ``tests.processes.gunicorn_app:<app>``; yields (port, store URL)."""
    port = free_port()
    url = f"sqlite://{tmp_path / 'sessions.db'}"
    env = {**os.environ, "SHOAL_STORE": url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind",
         f"127.0.0.1:{port}", "--log-level", "warning", f"tests.processes.gunicorn_app:{app}"],
        cwd=ROOT, env=env,
    )
    try:
        wait_listening(port, proc, time.monotonic() + 30)
        yield port, url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def request(port: int, cookie: str | None) -> tuple[dict[str, Any], str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    headers = {"Connection": "close"}
    if cookie:
        headers["Cookie"] = cookie
    conn.request("GET", "/", headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200, body
    set_cookie = response.getheader("Set-Cookie")
    return orjson.loads(body), set_cookie.split(";")[0] if set_cookie else None


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
    for port, _ in serve(tmp_path, "retry_app", workers=1):
        def get(cookie: str | None, request_id: str) -> tuple[dict[str, Any], str | None]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            headers = {"Connection": "close", "X-Request-Id": request_id}
            if cookie:
                headers["Cookie"] = cookie
            conn.request("GET", "/", headers=headers)
            response = conn.getresponse()
            body = response.read()
            conn.close()
            assert response.status == 200, (response.status, body)
            set_cookie = response.getheader("Set-Cookie")
            return orjson.loads(body), set_cookie.split(";")[0] if set_cookie else None

        first, cookie = get(None, "create")
        assert cookie is not None and first == {"n": 1, "runs": 1}
        retried, _ = get(cookie, "conflicted")
        assert retried == {"n": 102, "runs": 2}, "the conflicted GET ran again"
