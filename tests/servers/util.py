"""Small helpers for the private test servers: ports, waits, processes.

What: free loopback ports (never the system servers' own), bounded polling
(`wait_until`), log tails, /proc lookups (`pid_alive`, `descendants`), and
`spawn`, which starts a server as our child tied to our life.

Why: every server module needs the same few careful primitives; keeping
them here keeps each server module about its own server.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

HOST = "127.0.0.1"
# The system's own servers (and their usual bus/sentinel ports): never ours.
RESERVED_PORTS = frozenset({3306, 5432, 6379, 16379, 26379})
# Where server binaries live on Debian when not on a non-root user's PATH.
EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/libexec")


class ServerUnavailable(RuntimeError):
    """The server's binaries are not installed; the message says what to install."""


class ServerStartError(RuntimeError):
    """A server did not start (or stop) in time; the message has its log tail."""


def which(name: str) -> str | None:
    """The path of executable `name` on PATH or in the usual sbin dirs."""
    found = shutil.which(name)
    if found:
        return found
    return shutil.which(name, path=os.pathsep.join(EXTRA_BIN_DIRS))


_handed_out: set[int] = set()
_port_lock = threading.Lock()


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:`port` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, with_offset: int | None = None, attempts: int = 200) -> int:
    """A loopback port that is free now and was not handed out before.

    The kernel picks it (bind to port 0). With `with_offset`, port + offset
    must be free too (a Redis Cluster node also listens on port + 10000).
    Ports handed out are remembered so two servers of one run never get the
    same port even when both are stopped at the moment.
    """
    with _port_lock:
        for _ in range(attempts):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((HOST, 0))
                port: int = sock.getsockname()[1]
            wanted = [port] if with_offset is None else [port, port + with_offset]
            if any(
                p > 65535 or p in RESERVED_PORTS or p in _handed_out for p in wanted
            ):
                continue
            if with_offset is not None and not port_is_free(port + with_offset):
                continue
            _handed_out.update(wanted)
            return port
    raise ServerStartError(f"no free loopback port found in {attempts} attempts")


def can_connect(port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to 127.0.0.1:`port` is accepted."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    details: Callable[[], str] | None = None,
) -> None:
    """Poll `predicate` until it is true; past `timeout` s raise ServerStartError."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise ServerStartError(
                f"timed out after {timeout:.0f} s waiting for {what}{extra}"
            )
        time.sleep(interval)


def tail(paths: Iterable[Path], lines: int = 40) -> str:
    """The last `lines` lines of each existing file, headed by its path."""
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        body = "\n".join(text.splitlines()[-lines:])
        parts.append(f"--- last {lines} lines of {path} ---\n{body}")
    return "\n".join(parts) or "(no log written)"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first, then theirs), from /proc."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            parent_of[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        kids = [p for p, parent in parent_of.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


_PR_SET_PDEATHSIG = 1
# Looked up here, not in the forked child, where little is safe to do.
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: the child gets SIGKILL if the test process dies first."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    argv: Sequence[str], *, log: Path, cwd: Path, die_with_parent: bool = True
) -> subprocess.Popen[bytes]:
    """Start `argv` as our child, stdout and stderr appended to `log`.

    The child dies with the test process (PR_SET_PDEATHSIG) when started from
    the main thread: the kernel ties that signal to the starting thread.
    """
    tie = (
        die_with_parent
        and _prctl is not None
        and threading.current_thread() is threading.main_thread()
    )
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            preexec_fn=_die_with_parent if tie else None,  # noqa: PLW1509 (see tie)
        )
