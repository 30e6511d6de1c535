"""A private PostgreSQL for the tests: `PostgresServer`.

What: `initdb` (trust auth, superuser `postgres`, UTF8, no fsync) into a
temp dir, then `pg_ctl -w start` with the server on a free loopback port,
its Unix socket in the temp dir and durability off (fsync,
synchronous_commit, full_page_writes). `stop()` is `pg_ctl stop -m fast`;
`kill()` SIGKILLs the postmaster and its backends, as in a crash. Beware:
with synchronous_commit=off, a commit made less than ~0.6 s before `kill()`
may be lost (its WAL was not yet written); a test that needs a row to
survive the crash sets `synchronous_commit = on` in its session. URL:
`postgresql://postgres@127.0.0.1:PORT/postgres`.

Binaries come from `pg_config --bindir`, else the newest
`/usr/lib/postgresql/*/bin`. PostgreSQL refuses to run as root, so as root
the temp dir is given to the `postgres` user (which the Debian package
creates; we never create users) and every PostgreSQL command runs through
`runuser -u postgres --`.

`pg_ctl` forks the postmaster and exits, so it runs under `_reaper.py`, our
direct child, which reaps the postmaster and its backends when they die:
that reaper exiting means every process of this server is gone.

Why: the PostgreSQL store is tested against a real server we own, apart
from the machine's own on 5432.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .base import ServerProcess
from .util import (
    HOST,
    ServerUnavailable,
    can_connect,
    descendants,
    pid_alive,
    spawn,
    which,
)

REAPER = Path(__file__).with_name("_reaper.py")
_INSTALL_HINT = "install the Debian package postgresql, or run .ci/install-servers.sh"


def _version_key(bindir: Path) -> tuple[int, str]:
    name = bindir.parent.name
    return (int(name) if name.isdigit() else -1, name)


def find_postgres_bindir() -> Path:
    """The dir holding initdb, pg_ctl and postgres, or ServerUnavailable."""
    candidates: list[Path] = []
    pg_config = which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.TimeoutExpired):
            pass
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True
    )
    for bindir in candidates:
        if all(
            os.access(bindir / tool, os.X_OK)
            for tool in ("initdb", "pg_ctl", "postgres")
        ):
            return bindir
    raise ServerUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found via "
        f"pg_config --bindir nor in /usr/lib/postgresql/*/bin ({_INSTALL_HINT})"
    )


def postgres_user() -> pwd.struct_passwd | None:
    """The `postgres` account to run as when we are root (None if not root).

    Raises ServerUnavailable if we are root and it or runuser is missing.
    """
    if os.geteuid() != 0:
        return None
    if which("runuser") is None:
        raise ServerUnavailable(
            "running as root and runuser (util-linux) is not installed"
        )
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailable(
            "running as root, and PostgreSQL refuses to run as root, but there is "
            f"no 'postgres' user to run it as ({_INSTALL_HINT}: it creates the user)"
        ) from None


def check_postgres() -> None:
    """Raise ServerUnavailable unless a PostgresServer can be started here."""
    find_postgres_bindir()
    postgres_user()


class PostgresServer(ServerProcess):
    """A PostgreSQL cluster in a temp dir, run by pg_ctl under our reaper."""

    kind = "postgres"

    def _locate(self) -> None:
        self.bindir = find_postgres_bindir()
        self.run_as = postgres_user()

    def _layout(self) -> None:
        self.pgdata = self.data_dir / "pgdata"
        self.socket_dir = self.data_dir
        self.pg_ctl_log = self.data_dir / "pg_ctl.log"
        self.initdb_log = self.data_dir / "initdb.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    @property
    def log_paths(self) -> list[Path]:
        return [self.initdb_log, self.pg_ctl_log, self.log_path]

    def _as_postgres(self, argv: list[str]) -> list[str]:
        if self.run_as is None:
            return argv
        return [which("runuser") or "runuser", "-u", self.run_as.pw_name, "--", *argv]

    def _prepare(self) -> None:
        if self.run_as is not None:
            os.chown(self.data_dir, self.run_as.pw_uid, self.run_as.pw_gid)
        argv = self._as_postgres([
            str(self.bindir / "initdb"),
            "-D", str(self.pgdata),
            "-A", "trust",
            "-U", "postgres",
            "--no-sync",
            "-E", "UTF8",
            "--locale=C",
        ])  # fmt: skip
        self._run_setup(argv, log=self.initdb_log, what="initdb")

    def _command(self) -> list[str]:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses={HOST}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        pg_ctl = self._as_postgres([
            str(self.bindir / "pg_ctl"),
            "-w", "-t", str(int(self.startup_timeout)),
            "-D", str(self.pgdata),
            "-o", options,
            "-l", str(self.log_path),
            "start",
        ])  # fmt: skip
        reaper = [sys.executable, str(REAPER), "--pidfile", str(self._pidfile)]
        if threading.current_thread() is threading.main_thread():
            reaper.append("--die-with-parent")
        return [*reaper, "--", *pg_ctl]

    def _spawn(self) -> subprocess.Popen[bytes]:
        # The reaper ties itself to us (--die-with-parent) and shuts the
        # postmaster down if we die; a SIGKILL from the kernel would not.
        return spawn(
            self._command(),
            log=self.pg_ctl_log,
            cwd=self.data_dir,
            die_with_parent=False,
        )

    @property
    def _pidfile(self) -> Path:
        return self.pgdata / "postmaster.pid"

    def _pidfile_lines(self) -> list[str]:
        try:
            return self._pidfile.read_text().splitlines()
        except OSError:
            return []

    def _server_pid(self) -> int | None:
        """The postmaster's PID, from postmaster.pid."""
        lines = self._pidfile_lines()
        try:
            return int(lines[0])
        except (IndexError, ValueError):
            return None

    def _ping(self) -> bool:
        # Ready as pg_ctl -w sees it: a live postmaster that wrote "ready".
        lines = self._pidfile_lines()
        pid = self._server_pid()
        return (
            pid is not None
            and pid_alive(pid)
            and len(lines) >= 8
            and lines[7].strip() == "ready"
            and can_connect(self.port)
        )

    def _request_stop(self) -> None:
        argv = self._as_postgres([
            str(self.bindir / "pg_ctl"),
            "stop",
            "-D", str(self.pgdata),
            "-m", "fast",
            "-w", "-t", str(int(self.stop_timeout)),
        ])  # fmt: skip
        with open(self.pg_ctl_log, "ab") as out:
            subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                timeout=self.stop_timeout + 5,
                check=False,
            )

    def _kill_processes(self) -> None:
        """SIGKILL the postmaster, then every other process under our reaper."""
        if self._proc is None:
            return
        below = descendants(self._proc.pid)
        postmaster = self._server_pid()
        if postmaster is not None and postmaster in below:
            below.remove(postmaster)
            below.insert(0, postmaster)  # first, so it forks no new backend
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
