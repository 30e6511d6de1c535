"""A private standalone Redis for the tests: `RedisServer`.

What: `redis-server` (found on PATH) in the foreground on a free loopback
port, persistence off (`--save '' --appendonly no`), its dir a temp dir.
URL: `redis://127.0.0.1:PORT/0`.

Why: the Redis store is tested against a real server we own, so a test can
kill it (a crash: with persistence off, the data is gone, as after a crash of
a cache) and restart it on the same port, without ever touching the machine's
own Redis on 6379. Cluster nodes and replicas are this class with more flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import resp
from .base import ServerProcess
from .util import HOST, ServerUnavailable, which


def find_redis_server() -> str:
    """The redis-server binary, or ServerUnavailable saying what to install."""
    path = which("redis-server")
    if path is None:
        raise ServerUnavailable(
            "redis-server not found on PATH "
            "(install the Debian package redis-server, or run .ci/install-servers.sh)"
        )
    return path


def find_redis_cli() -> str:
    """The redis-cli binary, or ServerUnavailable saying what to install."""
    path = which("redis-cli")
    if path is None:
        raise ServerUnavailable(
            "redis-cli not found on PATH "
            "(install the Debian package redis-tools, or run .ci/install-servers.sh)"
        )
    return path


class RedisServer(ServerProcess):
    """One redis-server; `extra_args` are appended to its command line."""

    kind = "redis"

    def __init__(
        self,
        *,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        data_dir: str | Path | None = None,
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.binary = find_redis_server()
        self.extra_args = list(extra_args)
        super().__init__(
            port=port,
            data_dir=data_dir,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
        )

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--logfile", "",
            # Replicas sync at once (the default waits 5 s for more replicas).
            "--repl-diskless-sync-delay", "0",
            *self.extra_args,
        ]  # fmt: skip

    def _ping(self) -> bool:
        return resp.ping(self.port)

    def command(self, *args: str | int) -> resp.Reply:
        """Send one command to this server (for probes and test setup)."""
        return resp.command(self.port, *args)
