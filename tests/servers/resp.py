"""A tiny blocking Redis (RESP2) client for the server fixtures' own probes.

What: `command(port, "CLUSTER", "INFO")` sends one command to 127.0.0.1
and returns the decoded reply; `info(port, "replication")` parses INFO.

Why: readiness and failover checks must not depend on redis-py (an optional
extra of the library) nor on its retry and cluster logic; each probe is one
short-lived connection with a timeout, so no wait can hang.
"""

from __future__ import annotations

import socket
from typing import BinaryIO, TypeAlias

from .util import HOST

Reply: TypeAlias = "str | int | None | list[Reply]"


class RespError(RuntimeError):
    """The server answered with an error reply (-ERR ..., -LOADING ...)."""


def _encode(args: tuple[str | int, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read(stream: BinaryIO) -> Reply:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed mid-reply")
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RespError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        return data[:-2].decode()
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read(stream) for _ in range(count)]
    raise ConnectionError(f"unexpected RESP reply {line!r}")


def command(port: int, *args: str | int, timeout: float = 2.0) -> Reply:
    """Send one command to the Redis (or Sentinel) at 127.0.0.1:`port`."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(_encode(args))
        with sock.makefile("rb") as stream:
            return _read(stream)


def try_command(port: int, *args: str | int, timeout: float = 1.0) -> Reply | Exception:
    """Like `command`, but a connection or error reply is returned, not raised."""
    try:
        return command(port, *args, timeout=timeout)
    except (OSError, RespError) as exc:
        return exc


def parse_info(text: str) -> dict[str, str]:
    """INFO / CLUSTER INFO text as a dict of field -> value."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            fields[key.strip()] = value.strip()
    return fields


def info(port: int, *section: str) -> dict[str, str]:
    """INFO [section] of the server at `port`, parsed."""
    reply = command(port, "INFO", *section)
    return parse_info(str(reply))


def ping(port: int) -> bool:
    """Whether the server at `port` answers PING with PONG (not LOADING)."""
    return try_command(port, "PING", timeout=0.5) == "PONG"
