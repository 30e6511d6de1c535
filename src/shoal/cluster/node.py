"""Node ids: the name of one process of the cluster, in lock tokens, events and logs.

The default is ``host-pid-suffix``: the host and pid say where to look, the
short random suffix keeps two processes apart when a pid is reused (a
restarted worker, containers that all run as pid 1).
"""

from __future__ import annotations

import os
import re
import secrets
import socket

__all__ = ["default_node_id"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


_made: tuple[int, str] | None = None


def default_node_id() -> str:
    """``<host>-<pid>-<4 hex>``: one per process (a forked child gets its own)."""
    global _made
    pid = os.getpid()
    if _made is None or _made[0] != pid:
        host = _UNSAFE.sub("-", socket.gethostname()).strip("-") or "host"
        _made = (pid, f"{host}-{pid}-{secrets.token_hex(2)}")
    return _made[1]
