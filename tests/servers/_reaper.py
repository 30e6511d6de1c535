"""Run a command as a child subreaper; exit once every process under it is gone.

Usage: python _reaper.py [--pidfile FILE] [--die-with-parent] -- COMMAND...

What: this script (stdlib only, run by path) becomes a Linux child subreaper,
runs COMMAND, and reaps every process orphaned below it until none is left;
its exit code is COMMAND's. With --die-with-parent, if the test process dies
it sends SIGQUIT to the PID on the first line of FILE (an immediate
shutdown of the PostgreSQL postmaster named there).

Why: `pg_ctl start` forks the postmaster and exits, so the postmaster is no
child of ours. Here PID 1 does not reap orphans, so a killed postmaster and
its backends would stay zombies forever (and a zombie still "holds" the
postmaster.pid lock). Under this reaper they are reaped, and "the reaper
exited" means exactly "every process of that server is gone".
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from types import FrameType

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _quit_server(pidfile: str | None) -> None:
    if pidfile is None:
        return
    try:
        with open(pidfile) as f:
            pid = int(f.readline())
        os.kill(pid, signal.SIGQUIT)
    except (OSError, ValueError):
        pass


def main(argv: list[str]) -> int:
    pidfile: str | None = None
    die_with_parent = False
    while argv and argv[0] != "--":
        if argv[0] == "--pidfile":
            pidfile, argv = argv[1], argv[2:]
        elif argv[0] == "--die-with-parent":
            die_with_parent, argv = True, argv[1:]
        else:
            print(f"_reaper: unknown option {argv[0]}", file=sys.stderr)
            return 2
    command = argv[1:]
    if not command:
        print("_reaper: no command given", file=sys.stderr)
        return 2

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if die_with_parent:

        def on_term(signum: int, frame: FrameType | None) -> None:
            _quit_server(pidfile)

        signal.signal(signal.SIGTERM, on_term)
        parent = os.getppid()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            _quit_server(pidfile)

    sys.stdout.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - replaced by exec
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)

    code = 0
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return code
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            code = code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
