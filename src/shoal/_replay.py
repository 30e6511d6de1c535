"""Replaying a WSGI request whose optimistic save lost a race (``retry_conflicts``).

A request can run again only if its body can be given to the application
again. WSGI's ``wsgi.input`` is a stream that is read once, so the body is
read up front into memory when its declared ``CONTENT_LENGTH`` is at most
``max_replay_body`` bytes, and every attempt gets a fresh ``BytesIO`` of it.

Rejected alternative: teeing the stream while the application reads it (no
up-front read). A retry would then see only what the first attempt happened
to read, and a body the first attempt never read completely would have to be
finished from the socket after the fact; reading a small body up front is
simpler and costs at most ``max_replay_body`` bytes per request.

A body that cannot be replayed (larger than the limit, a chunked body with no
declared length, an invalid length) is left untouched on the stream: the
request runs once and a conflict is answered with 409.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError, ShoalError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["Replay", "UnreadableBody", "capture", "check_replay_options"]

_CHUNK = 16384


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class UnreadableBody(ShoalError):
    """The request body could not be read up front (the client went away).

    Internal to the middleware, which answers 400; never reaches callers.
    """


@dataclass(frozen=True, slots=True)
class Replay:
    """A request that can run again: its environ before the first run, its body."""

    environ: dict[str, Any]
    body: bytes

    def attempt(self, first: WSGIEnvironment | None = None) -> WSGIEnvironment:
        """The environ for one run, with a fresh ``wsgi.input`` of the body.

        The first run gets the server's own environ (``first``), so nothing
        changes for middleware around this one when no retry happens; a
        re-run gets a shallow copy of the environ as it was before the first
        run, so what the first run stored in it (parsed forms, request
        objects that cache the body) is not reused.
        """
        environ = first if first is not None else dict(self.environ)
        environ["wsgi.input"] = io.BytesIO(self.body)
        return environ


def check_replay_options(retry_conflicts: object, max_replay_body: object) -> None:
    """The ``retry_conflicts`` and ``max_replay_body`` of either middleware: ints >= 0."""
    for value in (retry_conflicts, max_replay_body):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError("retry_conflicts and max_replay_body must be ints >= 0")


def capture(environ: WSGIEnvironment, limit: int) -> Replay | None:
    """Read the body when it can be replayed (declared length <= ``limit``).

    Returns None, reading nothing, when it cannot. Raises ``UnreadableBody``
    when the declared body could not be read.
    """
    raw = environ.get("CONTENT_LENGTH") or ""
    if not raw.strip():
        coding = environ.get("HTTP_TRANSFER_ENCODING", "").strip().lower()
        if coding and coding != "identity":
            return None  # a chunked body of unknown size: not replayable
        # No length and no Transfer-Encoding: there is no body (RFC 9112 6.3),
        # even when the server sets ``wsgi.input_terminated``, as gunicorn does
        # on every request. Rejected: reading that flag as "chunked", which
        # made every GET unretriable under gunicorn.
        length = 0
    else:
        # Digits only (RFC 9110 8.6): int() also takes "+5", "1_0" and "٣",
        # which no server reads as that length. Found by fuzzing (tests/fuzz/).
        digits = raw.strip(" \t")
        if not (digits.isascii() and digits.isdigit()):
            return None
        length = int(digits)
        if length > limit:
            return None
    body = _read_exactly(environ["wsgi.input"], length) if length else b""
    return Replay(dict(environ), body)


def _read_exactly(stream: _Readable, length: int) -> bytes:
    """Up to ``length`` bytes; fewer only when the client closed the body early."""
    parts: list[bytes] = []
    left = length
    try:
        while left > 0:
            chunk = stream.read(min(left, _CHUNK))
            if not chunk:
                break  # the application would have seen the same short body
            parts.append(chunk)
            left -= len(chunk)
    except (OSError, ValueError) as exc:
        raise UnreadableBody(str(exc)) from exc
    return b"".join(parts)
