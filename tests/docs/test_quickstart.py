"""The README's WSGI quickstart, copied verbatim, served by gunicorn with two workers."""

from __future__ import annotations

import os
import socket
from contextlib import nullcontext
from pathlib import Path

from tests.processes._servers import get, running_gunicorn

from ._markdown import parse_examples

ROOT = Path(__file__).resolve().parents[2]
MAX_REQUESTS = 200  # bounded: the kernel decides which worker accepts


def quickstart_code() -> str:
    served = [example for example in parse_examples(ROOT / "README.md") if example.wsgi]
    assert served, "the README lost its WSGI quickstart (the block with a wsgi marker)"
    return served[0].code


def workers_seen(access_log: Path) -> set[str]:
    if not access_log.exists():
        return set()
    return {line.split()[0] for line in access_log.read_text().splitlines() if line.strip()}


def test_the_readme_quickstart_counts_visits_across_two_gunicorn_workers(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(quickstart_code(), encoding="utf-8")
    access_log = tmp_path / "access.log"
    env = {key: value for key, value in os.environ.items() if key != "SHOAL_STORE"}
    logging = ["--access-logfile", str(access_log), "--access-logformat", "%(p)s %(s)s"]
    with running_gunicorn("app:app", cwd=tmp_path, env=env, workers=2, extra_args=logging) as port:
        cookie: str | None = None
        visits = 0
        while visits < MAX_REQUESTS:
            # An idle connection keeps one sync worker busy reading it, so the
            # request goes to a worker the kernel's wake-up order may never pick.
            one_worker_so_far = visits >= 6 and len(workers_seen(access_log)) < 2
            with socket.create_connection(("127.0.0.1", port)) if one_worker_so_far else nullcontext():
                answer = get(port, cookie)
            visits += 1
            assert (answer.status, answer.body.decode()) == (200, f"visit {visits}\n")
            cookie = answer.cookie or cookie
            assert cookie is not None, "the first answer set no session cookie"
            if visits >= 6 and len(workers_seen(access_log)) == 2:
                break
    assert len(workers_seen(access_log)) == 2, f"one worker answered all {visits} requests"
    # "sqlite:sessions.db" is relative: the file is in the server's working directory.
    assert (tmp_path / "sessions.db").is_file()
