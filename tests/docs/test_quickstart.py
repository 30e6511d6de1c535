"""The README's WSGI quickstart, copied verbatim, served by gunicorn with two workers."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes.test_gunicorn import free_port, wait_listening

from ._markdown import parse_examples

ROOT = Path(__file__).resolve().parents[2]
MAX_REQUESTS = 200  # bounded: the kernel decides which worker accepts


def quickstart_code() -> str:
    served = [example for example in parse_examples(ROOT / "README.md") if example.wsgi]
    assert served, "the README lost its WSGI quickstart (the block with a wsgi marker)"
    return served[0].code


@pytest.fixture
def served_quickstart(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    (tmp_path / "app.py").write_text(quickstart_code(), encoding="utf-8")
    port = free_port()
    access_log = tmp_path / "access.log"
    env = {key: value for key, value in os.environ.items() if key != "SHOAL_STORE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
         "--access-logfile", str(access_log), "--access-logformat", "%(p)s %(s)s",
         "--log-level", "warning", "app:app"],
        cwd=tmp_path, env=env,
    )
    try:
        wait_listening(port, proc, time.monotonic() + 30)
        yield port, access_log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def get(port: int, cookie: str | None) -> tuple[int, str, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        headers = {"Connection": "close"}
        if cookie:
            headers["Cookie"] = cookie
        conn.request("GET", "/", headers=headers)
        response = conn.getresponse()
        body = response.read().decode()
        set_cookie = response.getheader("Set-Cookie")
        return response.status, body, set_cookie.split(";")[0] if set_cookie else None
    finally:
        conn.close()


def workers_seen(access_log: Path) -> set[str]:
    if not access_log.exists():
        return set()
    return {line.split()[0] for line in access_log.read_text().splitlines() if line.strip()}


def test_the_readme_quickstart_counts_visits_across_two_gunicorn_workers(
    served_quickstart: tuple[int, Path],
) -> None:
    port, access_log = served_quickstart
    cookie: str | None = None
    visits = 0
    while visits < MAX_REQUESTS:
        status, body, set_cookie = get(port, cookie)
        visits += 1
        assert (status, body) == (200, f"visit {visits}\n")
        cookie = set_cookie or cookie
        assert cookie is not None, "the first answer set no session cookie"
        if visits >= 6 and len(workers_seen(access_log)) == 2:
            break
    assert len(workers_seen(access_log)) == 2, f"one worker answered all {visits} requests"
    # "sqlite:sessions.db" is relative: the file is in the server's working directory.
    assert (access_log.parent / "sessions.db").is_file()
