"""What every private test server has in common: port, data dir, lifecycle.

What: `ServerProcess` runs one database server as a child process of the
test run, on a free loopback port and in a `tempfile.mkdtemp()` data dir.
Both are chosen once, in the constructor, so `restart()` brings the server
back on the same port with the same data, the way a crashed server comes
back in production. `ServerGroup` is the same interface for servers made
of several processes (a Redis Cluster, a Sentinel setup).

Why: the store tests need real servers, but must never touch the machine's
own (6379/5432/3306 are never used), must never hang (every wait has a
deadline and fails with the server's log tail), and must never leave a
process behind: each is stopped by its PID only, children die with the test
process, an atexit hook kills what an interrupted run left running, and the
temp dirs of runs that were SIGKILLed are swept on the next run.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, TypeVar

from .util import (
    HOST,
    ServerStartError,
    free_port,
    pid_alive,
    port_is_free,
    spawn,
    tail,
    wait_until,
)

_S = TypeVar("_S", bound="ServerProcess")
_G = TypeVar("_G", bound="ServerGroup")


# ------------------------------------------------------ the server process

_live: set[ServerProcess] = set()  # started and not stopped: the atexit net
_owned_dirs: set[Path] = set()  # temp dirs to remove at exit if not yet
_OWNER_FILE = ".shoal-owner-pid"
_swept = False


def make_temp_dir(kind: str) -> Path:
    """A new temp dir for `kind`, marked with our PID.

    The first call of a process also removes the shoal-* temp dirs of test
    processes that are gone (a SIGKILLed run cannot clean up after itself).
    """
    global _swept
    if not _swept:
        _swept = True
        for stale in Path(tempfile.gettempdir()).glob("shoal-*"):
            try:
                owner = int((stale / _OWNER_FILE).read_text())
            except (OSError, ValueError):
                continue  # not ours, or not marked: leave it alone
            if not pid_alive(owner):
                shutil.rmtree(stale, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"shoal-{kind}-"))
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    _owned_dirs.add(path)
    return path


@atexit.register
def _kill_leftovers() -> None:
    """Kill servers a test run left running, remove temp dirs it left."""
    for server in list(_live):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            server.kill()
    for path in list(_owned_dirs):
        shutil.rmtree(path, ignore_errors=True)


def run_setup(
    argv: list[str], *, log: Path, what: str, timeout: float, cwd: Path | None = None
) -> None:
    """Run one set-up command (initdb, cluster create...), its output appended to `log`.

    `ServerStartError` with the log's tail when it fails or outlasts `timeout`.
    """
    try:
        with open(log, "ab") as out:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                timeout=timeout,
                check=False,
            )
    except subprocess.TimeoutExpired:
        raise ServerStartError(f"{what} took over {timeout:.0f} s\n{tail([log])}") from None
    if done.returncode != 0:
        raise ServerStartError(f"{what} failed ({done.returncode})\n{tail([log])}")


class ServerProcess(abc.ABC):
    """One server process on a stable loopback port and data dir.

    Subclasses give the command line (`_command`) and a readiness probe
    (`_ping`); they may find their binaries (`_locate`), name their files in
    the data dir (`_layout`), prepare it once (`_prepare`, with `_run_setup`
    for initdb and the like) and change how the process is found, asked to
    stop and killed.
    """

    kind: ClassVar[str] = "server"
    default_stop_timeout: ClassVar[float] = 10.0

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: str | Path | None = None,
        startup_timeout: float = 20.0,
        stop_timeout: float | None = None,
    ) -> None:
        self._locate()  # first: a missing binary leaves no temp dir behind
        self._port_was_picked = port is None
        self.port: int = self._pick_port() if port is None else port
        self._owns_dir = data_dir is None
        if data_dir is None:
            self.data_dir = make_temp_dir(self.kind)
        else:
            self.data_dir = Path(data_dir)
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"{self.kind}.log"
        self.startup_timeout = startup_timeout
        self.stop_timeout = self.default_stop_timeout if stop_timeout is None else stop_timeout
        self.last_start_seconds: float | None = None  # how long start() took
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self._layout()

    # -- what subclasses provide

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The URL a store of our library opens to reach this server."""

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The argv that runs the server in the foreground."""

    @abc.abstractmethod
    def _ping(self) -> bool:
        """Whether the server answers on its port now (a quick, bounded probe)."""

    def _locate(self) -> None:
        """Find the server's binaries; `ServerUnavailable` saying what to install."""

    def _layout(self) -> None:
        """Name the server's files under `data_dir` (known by then)."""

    def _prepare(self) -> None:
        """Set up the data dir before the first start (initdb and the like)."""

    def _run_setup(self, argv: list[str], *, log: Path, what: str, timeout: float = 60.0) -> None:
        """Run one set-up command in `data_dir` (see `run_setup`)."""
        run_setup(argv, log=log, what=what, timeout=timeout, cwd=self.data_dir)

    def _pick_port(self) -> int:
        return free_port()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return spawn(self._command(), log=self.log_path, cwd=self.data_dir)

    def _server_pid(self) -> int | None:
        """The PID of the server proper (our child unless overridden)."""
        return self._proc.pid if self._proc is not None else None

    def _request_stop(self) -> None:
        """Ask the server to shut down gracefully (SIGTERM unless overridden)."""
        if self._proc is not None:
            self._proc.terminate()

    def _kill_processes(self) -> None:
        """SIGKILL the server's processes (our child unless overridden)."""
        if self._proc is not None:
            self._proc.kill()

    @property
    def log_paths(self) -> list[Path]:
        """The files whose tail explains a failure."""
        return [self.log_path]

    # -- the lifecycle

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs, else None."""
        return self._server_pid() if self.running else None

    @property
    def running(self) -> bool:
        """Whether the process we started has not exited yet."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_paths, lines)

    def start(self: _S) -> _S:
        """Start the server and wait (bounded) until it answers; returns self."""
        if self.running:
            raise ServerStartError(f"{self!r} is already running")
        began = time.monotonic()
        if not self._prepared:
            self._prepare()
            self._prepared = True
        try:
            self._start_once()
        except ServerStartError:
            # A port picked for us may have been taken by another process
            # (say another xdist worker) before the server bound it: pick
            # another, once, before the first start only.
            if not (self._port_was_picked and self.last_start_seconds is None):
                raise
            if port_is_free(self.port):
                raise
            self.port = self._pick_port()
            self._start_once()
        self.last_start_seconds = time.monotonic() - began
        return self

    def _start_once(self) -> None:
        self._proc = self._spawn()
        _live.add(self)
        proc = self._proc

        def up() -> bool:
            if proc.poll() is not None:
                raise ServerStartError(
                    f"{self!r} exited with code {proc.returncode} while starting\n"
                    f"{self.log_tail()}"
                )
            return self._ping()

        try:
            wait_until(
                up,
                timeout=self.startup_timeout,
                what=f"{self!r} to answer",
                details=self.log_tail,
            )
        except ServerStartError:
            self.kill()
            raise

    def stop(self) -> None:
        """Shut down gracefully; SIGKILL after `stop_timeout` s. No-op if stopped."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._request_stop()
                proc.wait(self.stop_timeout)
            except (subprocess.TimeoutExpired, ServerStartError, ProcessLookupError):
                pass
        self._finish(proc)

    def kill(self) -> None:
        """SIGKILL the server, as in a crash. The data dir stays for restart()."""
        proc = self._proc
        if proc is None:
            return
        self._finish(proc)

    def _finish(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill what is left of the server, reap our child (bounded)."""
        if proc.poll() is None:
            try:
                self._kill_processes()
            except ProcessLookupError:
                pass
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()  # the child itself, if killing the server was not enough
                proc.wait(self.stop_timeout)
        self._proc = None
        _live.discard(self)

    def restart(self) -> None:
        """Stop if running, then start again on the same port and data dir."""
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start the server if a test killed it and did not restart it."""
        if not self.running:
            self.start()

    def cleanup(self) -> None:
        """Stop the server and remove the data dir if we created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            _owned_dirs.discard(self.data_dir)

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {HOST}:{self.port} pid={self.pid}>"


# ------------------------------------------------------- groups of servers


class ServerGroup(abc.ABC):
    """Several ServerProcess that form one service (a cluster, a sentinel set).

    Members live in subdirectories of one temp dir the group owns.
    """

    kind: ClassVar[str] = "group"

    def __init__(self, *, startup_timeout: float = 20.0) -> None:
        self.base_dir = make_temp_dir(self.kind)
        self.startup_timeout = startup_timeout
        self.last_start_seconds: float | None = None

    @property
    @abc.abstractmethod
    def members(self) -> list[ServerProcess]:
        """Every process of the group, in start order."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The URL a store of our library opens to reach this service."""

    @abc.abstractmethod
    def _start_members(self) -> None:
        """Start the processes for the first time and form the service."""

    @abc.abstractmethod
    def healthy(self) -> bool:
        """Whether the service is fully formed and serving now."""

    def describe(self) -> str:
        """The state shown when a wait times out (defaults to log tails)."""
        return "\n".join(m.log_tail(10) for m in self.members)

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait (bounded) until `healthy()`."""
        wait_until(
            self.healthy,
            timeout=self.startup_timeout if timeout is None else timeout,
            what=f"{self!r} to be healthy",
            interval=0.1,
            details=self.describe,
        )

    def start(self: _G) -> _G:
        """Start every member, form the service, wait until healthy."""
        began = time.monotonic()
        try:
            self._start_members()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.last_start_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every member gracefully (bounded), last started first."""
        for member in reversed(self.members):
            member.stop()

    def kill(self) -> None:
        """SIGKILL every member."""
        for member in self.members:
            member.kill()

    def restart(self) -> None:
        """Stop every member, start them again on the same ports and dirs."""
        self.stop()
        for member in self.members:
            member.start()
        self.wait_healthy()

    def heal(self) -> None:
        """Start again the members a test killed, wait until healthy."""
        for member in self.members:
            member.ensure_running()
        self.wait_healthy()

    @property
    def running(self) -> bool:
        return all(m.running for m in self.members)

    def cleanup(self) -> None:
        """Stop every member and remove the group's temp dir."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        _owned_dirs.discard(self.base_dir)

    def __enter__(self: _G) -> _G:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        ports = ",".join(str(m.port) for m in self.members)
        return f"<{type(self).__name__} ports={ports}>"
