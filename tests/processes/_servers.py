"""Real servers (gunicorn, uvicorn) on a free loopback port, and one-shot HTTP requests."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the server did not listen within the deadline")


def stop(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM a server we started, by PID; SIGKILL it if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextmanager
def running_server(
    argv: Sequence[str], port: int, *, cwd: Path, env: Mapping[str, str]
) -> Iterator[int]:
    """Run ``argv`` (a server that will listen on ``port``) until the block ends."""
    proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env))
    try:
        wait_listening(port, proc, time.monotonic() + START_TIMEOUT)
        yield port
    finally:
        stop(proc)


@contextmanager
def running_gunicorn(
    app: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    workers: int,
    extra_args: Sequence[str] = (),
) -> Iterator[int]:
    """gunicorn serving ``app`` (``module:attr``) until the block ends; yields its port."""
    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind",
        f"127.0.0.1:{port}", "--log-level", "warning", *extra_args, app,
    ]  # fmt: skip
    with running_server(argv, port, cwd=cwd, env=env):
        yield port


@contextmanager
def running_uvicorn(app: str, *, cwd: Path, env: Mapping[str, str], workers: int) -> Iterator[int]:
    """uvicorn serving ``app`` (``module:attr``) until the block ends; yields its port."""
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "--workers", str(workers), "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning", app,
    ]  # fmt: skip
    with running_server(argv, port, cwd=cwd, env=env):
        yield port


class Answer(NamedTuple):
    status: int
    body: bytes
    cookie: str | None  # the "name=value" part of Set-Cookie, if any


def get(port: int, cookie: str | None = None, headers: Mapping[str, str] | None = None) -> Answer:
    """One GET / on a fresh connection (so the kernel may hand it to any worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    sent = {"Connection": "close", **(headers or {})}
    if cookie:
        sent["Cookie"] = cookie
    try:
        conn.request("GET", "/", headers=sent)
        response = conn.getresponse()
        body = response.read()
        set_cookie = response.getheader("Set-Cookie")
    finally:
        conn.close()
    return Answer(response.status, body, set_cookie.split(";")[0] if set_cookie else None)
