"""A private MariaDB for the tests: `MariaDBServer`.

What: `mariadb-install-db` (or `mysql_install_db`) into a temp dir, then
`mariadbd` (or `mysqld`) in the foreground on a free loopback port, its
socket and pid file in the temp dir, `--no-defaults` (the machine's my.cnf
names port 3306 and the system socket: never read it), grant tables off (so
`root` without password, or any user, gets in), utf8mb4, durability off.
A commit survives `kill()` (the log is written to the OS at commit).
Every start runs an init file creating database `test` if missing. As root
it runs with `--user=root` (no chown needed). URL:
`mysql://root@127.0.0.1:PORT/test`.

MariaDB only: Oracle MySQL's mysqld initialises differently
(`--initialize-insecure`) and is not supported here.

Why: the MySQL store is tested against a real server we own, that a test can
kill (InnoDB crash recovery on restart) apart from the machine's own on 3306.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .base import ServerProcess
from .util import HOST, ServerUnavailable, which

_INSTALL_HINT = (
    "install the Debian package mariadb-server, or run .ci/install-servers.sh"
)
DATABASE = "test"

# Fast, small and throwaway: for tests only. Log flush at commit 2 = written
# to the OS at each commit, fsynced once a second: a committed row survives
# a crash of the server (kill()), only not of the machine.
_SERVER_OPTIONS = [
    "--skip-log-bin",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--character-set-server=utf8mb4",
]


def find_mariadbd() -> str:
    """The server binary (mariadbd, else mysqld), or ServerUnavailable."""
    path = which("mariadbd") or which("mysqld")
    if path is None:
        raise ServerUnavailable(f"mariadbd / mysqld not found ({_INSTALL_HINT})")
    return path


def find_install_db() -> str:
    """mariadb-install-db (else mysql_install_db), or ServerUnavailable."""
    path = which("mariadb-install-db") or which("mysql_install_db")
    if path is None:
        raise ServerUnavailable(
            f"mariadb-install-db / mysql_install_db not found ({_INSTALL_HINT})"
        )
    return path


def check_mariadb() -> None:
    """Raise ServerUnavailable unless a MariaDBServer can be started here."""
    find_mariadbd()
    find_install_db()


def _greets(port: int) -> bool:
    """Whether the server at `port` sends a protocol-10 handshake (it is ready)."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            header = sock.recv(5)
    except OSError:
        return False
    return len(header) == 5 and header[4] == 10


class MariaDBServer(ServerProcess):
    """A MariaDB server with its datadir in a temp dir."""

    kind = "mariadb"
    default_stop_timeout = 15.0

    def _locate(self) -> None:
        self.binary = find_mariadbd()
        self.install_db = find_install_db()
        self.as_root = os.geteuid() == 0

    def _layout(self) -> None:
        self.datadir = self.data_dir / "data"
        self.socket_path = self.data_dir / "mysqld.sock"
        self.init_file = self.data_dir / "init.sql"
        self.install_log = self.data_dir / "install-db.log"

    @property
    def url(self) -> str:
        return f"mysql://root@{HOST}:{self.port}/{DATABASE}"

    @property
    def log_paths(self) -> list[Path]:
        return [self.install_log, self.log_path]

    def _user_option(self) -> list[str]:
        return ["--user=root"] if self.as_root else []

    def _prepare(self) -> None:
        self.init_file.write_text(
            f"CREATE DATABASE IF NOT EXISTS `{DATABASE}` CHARACTER SET utf8mb4;\n"
        )
        argv = [
            self.install_db,
            "--no-defaults",  # must come first
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            *self._user_option(),
            *_SERVER_OPTIONS,
        ]
        self._run_setup(argv, log=self.install_log, what="mariadb-install-db")

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--no-defaults",  # must come first
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            f"--bind-address={HOST}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.data_dir / 'mysqld.pid'}",
            f"--tmpdir={self.data_dir}",
            f"--init-file={self.init_file}",
            "--skip-grant-tables",
            "--skip-name-resolve",
            *self._user_option(),
            *_SERVER_OPTIONS,
        ]

    def _ping(self) -> bool:
        return _greets(self.port)
