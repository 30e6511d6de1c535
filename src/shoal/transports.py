"""Transports: how a request carries its session, and how a response hands it back.

Pure (no I/O, no framework): a transport turns what the client sent into an
``Incoming`` (the session id, the joined replica, the replica cookies held)
and a commit's ``CommitOutcome`` into response headers. The WSGI middleware
and the framework adapters (``shoal.flask``) only map their request and
response objects onto it, so every one of them frames cookies, replica
chunks and ``Vary`` the same way, and an ASGI middleware can reuse it as is.

A transport reads headers through a ``HeaderGetter`` (a header name in its
usual spelling, ``"Cookie"``, to its value or None), so a transport that
carries the id in a header of its own (``X-Session-Id``, for API clients)
fits the same ``Transport`` protocol: ``CookieTransport`` for browsers,
``HeaderTransport`` for API and mobile clients, ``CallableTransport`` for
any other scheme (a pair of functions: read the id, hand it back).
``transport_for`` picks the middleware's, else the manager's, else the
default (cookies, from the manager's options) and refuses a transport that
cannot carry what the manager sends (a replica over a header).

The replica travels in cookies ``<name>_r0``, ``<name>_r1``, ...: chunk 0
starts with ``<count>.<digest>.`` so a missing, foreign or reordered chunk
is detected before the replica is opened (``shoal.replica`` seals it).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
import re
from typing import TYPE_CHECKING, Final, Protocol

from .cookies import CookieOptions, clear_cookie_header, parse_cookie_header, set_cookie_header
from .errors import (
    ConfigError,
    ConflictError,
    LockLost,
    LockTimeout,
    ShoalError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from .manager import CommitOutcome, SessionManager

__all__ = [
    "ANSWERED",
    "COOKIE_BUDGET",
    "CallableTransport",
    "MAX_CHUNKS",
    "MAX_ID_HEADER",
    "CookieTransport",
    "HeaderGetter",
    "HeaderTransport",
    "Headers",
    "Incoming",
    "Transport",
    "error_response",
    "join_chunks",
    "replica_chunk_names",
    "replica_set_cookies",
    "split_chunks",
    "transport_for",
]

log = logging.getLogger("shoal")

Headers = list[tuple[str, str]]
HeaderGetter = Callable[[str], str | None]
"""A request header's value by name (``"Cookie"``), or None when absent."""

COOKIE_BUDGET: Final = 3900
"""Bytes per replica cookie, name and attributes included (browsers keep 4096)."""
MAX_CHUNKS: Final = 32
MAX_ID_HEADER: Final = 1024
"""Longest id header read; far above an id's 43 characters, so a longer value
is none that shoal sent: ignored whole before any parsing, as a Cookie header
over ``MAX_COOKIE_HEADER`` is."""

# The errors a transport answers itself: the store's state, not a bug. Every
# other ShoalError propagates to the framework. Rejected: a plain 500 of our
# own, which would hide the traceback from the framework's error handler, its
# debugger and the server's log.
ANSWERED: Final = (StoreUnavailable, LockTimeout, ConflictError, LockLost)


def error_response(exc: ShoalError) -> tuple[str, Headers, bytes]:
    """The HTTP answer (status line, headers, body) for one of the ``ANSWERED`` errors."""
    if isinstance(exc, LockTimeout):
        retry = max(1, round(exc.waited))
        status, headers, body = (
            "503 Service Unavailable", [("Retry-After", str(retry))], b"Session busy, retry.\n"
        )
    elif isinstance(exc, ConflictError | LockLost):
        status, headers, body = "409 Conflict", [], b"Session changed concurrently, retry.\n"
    elif isinstance(exc, StoreUnavailable):
        status, headers, body = (
            "503 Service Unavailable", [("Retry-After", "1")], b"Session store unavailable.\n"
        )
    else:
        raise ValueError(f"{type(exc).__name__} is not answered by the middleware") from exc
    headers = [("Content-Type", "text/plain; charset=utf-8"), *headers]
    headers.append(("Content-Length", str(len(body))))
    return status, headers, body


@dataclass(frozen=True, slots=True)
class Incoming:
    """What one request brought: its session id, and its replica if replicas are on.

    ``replica_held`` names the replica cookies the client holds, so the
    response can clear those it no longer needs.
    """

    session_id: str | None = None
    replica: str | None = None
    replica_held: tuple[str, ...] = ()


class Transport(Protocol):
    """Moves a session between requests and responses; pure, one per options."""

    @property
    def replica(self) -> bool:
        """Whether it carries the manager's replica (``SessionManager(replica=...)``)."""

    def read(self, header: HeaderGetter) -> Incoming:
        """The id (and replica) the request carries."""

    def response_headers(
        self, outcome: CommitOutcome, incoming: Incoming, *, https: bool, vary: bool
    ) -> Headers:
        """The headers that tell the client ``outcome``; ``vary`` when the session
        was used, so shared caches do not reuse the response."""


class CookieTransport:
    """The session id in a cookie, the replica in ``<name>_r<i>`` chunk cookies."""

    __slots__ = ("options", "replica")

    def __init__(self, options: CookieOptions, *, replica: bool = False) -> None:
        self.options = options
        self.replica = replica

    def __repr__(self) -> str:
        return f"<CookieTransport {self.options.name!r}{' replica' if self.replica else ''}>"

    def read(self, header: HeaderGetter) -> Incoming:
        return self.read_cookie_header(header("Cookie") or "")

    def read_cookie_header(self, cookie_header: str) -> Incoming:
        """``read`` for a framework that hands over the ``Cookie`` header itself."""
        if not cookie_header:
            return Incoming()
        name = self.options.name
        cookies = parse_cookie_header(cookie_header)
        held = tuple(replica_chunk_names(cookies, name)) if self.replica else ()
        return Incoming(
            session_id=cookies.get(name),
            replica=join_chunks(cookies, name) if held else None,
            replica_held=held,
        )

    def response_headers(
        self, outcome: CommitOutcome, incoming: Incoming, *, https: bool, vary: bool
    ) -> Headers:
        options = self.options
        headers: Headers = []
        if outcome.send_id is not None:
            headers.append(("Set-Cookie", set_cookie_header(options, outcome.send_id, https=https)))
        elif outcome.clear:
            headers.append(("Set-Cookie", clear_cookie_header(options, https=https)))
        for value in replica_set_cookies(
            options, outcome.replica, outcome.clear_replica, incoming.replica_held, https=https
        ):
            headers.append(("Set-Cookie", value))
        if vary:
            headers.append(("Vary", "Cookie"))
        return headers


# RFC 9110 token, minus "_": nginx and gunicorn drop (or refuse) request
# headers with an underscore, so such a name would silently lose every id.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^`|~0-9A-Za-z-]+")
_RESERVED = frozenset({"cookie", "set-cookie", "vary", "content-length", "content-type"})


class HeaderTransport:
    """The session id in a request header of its own, for API and mobile clients.

    The client sends its id in ``name`` (``X-Session-Id: <id>``); a response
    carries ``name`` only when the client must change what it holds: the new
    id (a new session, a rotation at login, a refreshed ``max_age``), or an
    empty value (``X-Session-Id:``) when the session ended (logout, or an id
    that names nothing), meaning "drop your id". No header means "keep it".
    ``Vary`` names the header, not Cookie. No replica: a client that keeps
    one header would have to keep the chunks too, and the manager's
    ``replica=`` is refused by ``transport_for`` (rejected: a second header
    for the replica, which no API client asked for and proxies cap in size).
    """

    __slots__ = ("name",)

    def __init__(self, name: str = "X-Session-Id") -> None:
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigError(
                f"header name {name!r} is not a valid HTTP header name: use letters, digits "
                "and '-' (proxies drop names with '_'), e.g. HeaderTransport('X-Session-Id')"
            )
        if name.lower() in _RESERVED:
            raise ConfigError(
                f"header name {name!r} already has a meaning in HTTP: pick a header of its "
                "own, e.g. HeaderTransport('X-Session-Id'); for cookies, leave transport= out"
            )
        self.name = name

    def __repr__(self) -> str:
        return f"<HeaderTransport {self.name!r}>"

    @property
    def replica(self) -> bool:
        return False

    def read(self, header: HeaderGetter) -> Incoming:
        value = header(self.name)
        if value is None or len(value) > MAX_ID_HEADER:
            return Incoming()
        # A malformed value (two ids joined by a proxy, a bad character) is
        # refused by the manager: a fresh session, no store I/O.
        return Incoming(session_id=value.strip(" \t") or None)

    def response_headers(
        self, outcome: CommitOutcome, incoming: Incoming, *, https: bool, vary: bool
    ) -> Headers:
        headers: Headers = []
        if outcome.send_id is not None:
            headers.append((self.name, outcome.send_id))
        elif outcome.clear:
            headers.append((self.name, ""))
        if vary:
            headers.append(("Vary", self.name))
        return headers


class CallableTransport:
    """The id read from the request and handed back by two functions of the application's.

    For a scheme neither a cookie nor a plain header covers (``Authorization:
    Session <id>``, an id inside a header the application already sends)::

        CallableTransport(
            read_id=lambda header: (header("Authorization") or "").removeprefix("Session ") or None,
            send_id=lambda new_id: [("X-New-Session", new_id or "")],
            vary=("Authorization",),
        )

    ``read_id(header)`` gets a ``HeaderGetter`` and returns the id the request
    carries, or None; a value that is not a string, is empty or longer than
    ``MAX_ID_HEADER`` is ignored (a fresh session, no store I/O), and a
    malformed one is refused by the manager as from any transport, so a
    client-chosen id is never adopted. ``send_id(session_id)`` returns the
    response headers that hand the client a new id, or, given None, tell it
    to drop its id (logout, an id that names nothing); it is called only
    then (an unchanged id sends nothing). ``vary``: the request headers a
    response that used the session varies on. No replica (as a header).
    """

    __slots__ = ("_read", "_send", "vary")

    def __init__(
        self,
        read_id: Callable[[HeaderGetter], str | None],
        send_id: Callable[[str | None], Sequence[tuple[str, str]]],
        *,
        vary: Sequence[str] = (),
    ) -> None:
        if not callable(read_id) or not callable(send_id):
            raise ConfigError(
                "CallableTransport(read_id, send_id) takes two functions: read_id(header) -> "
                "id or None, send_id(id or None) -> [(name, value), ...]"
            )
        self._read, self._send = read_id, send_id
        self.vary = tuple(vary)

    def __repr__(self) -> str:
        return f"<CallableTransport {getattr(self._read, '__name__', 'read_id')}>"

    @property
    def replica(self) -> bool:
        return False

    def read(self, header: HeaderGetter) -> Incoming:
        value = self._read(header)
        if not isinstance(value, str) or not value or len(value) > MAX_ID_HEADER:
            return Incoming()
        return Incoming(session_id=value)

    def response_headers(
        self, outcome: CommitOutcome, incoming: Incoming, *, https: bool, vary: bool
    ) -> Headers:
        headers: Headers = []
        if outcome.send_id is not None:
            headers.extend(self._send(outcome.send_id))
        elif outcome.clear:
            headers.extend(self._send(None))
        if vary:
            headers.extend(("Vary", name) for name in self.vary)
        return headers


def transport_for(manager: SessionManager, transport: Transport | None = None) -> Transport:
    """``transport``, else the manager's ``transport=``, checked; by default its cookies.

    Refused with a ``ConfigError``: a transport that does not carry the
    replica of a manager with ``replica=`` (it would be sent nowhere, or
    never read back), and a replica transport on a manager without one.
    """
    replica = bool(manager.replica)
    if transport is None:
        transport = manager.transport
    if transport is None:
        return CookieTransport(manager.cookie, replica=replica)
    if replica and not transport.replica:
        raise ConfigError(
            f"{transport!r} carries no replica, but the SessionManager has "
            f"replica={manager.replica!r}: leave transport= out (cookies carry the "
            "replica), or drop replica= from the SessionManager"
        )
    if transport.replica and not replica:
        raise ConfigError(
            f"{transport!r} reads replica cookies, but the SessionManager has no replica: "
            "give replica=False to the transport, or replica=True to the SessionManager"
        )
    return transport


# -- replica chunks -------------------------------------------------------------


def _chunk_name(base: str, index: int) -> str:
    return f"{base}_r{index}"


def _digest(wire: str) -> str:
    return hashlib.sha256(wire.encode("ascii")).hexdigest()[:12]


def replica_chunk_names(cookies: Mapping[str, str], base: str) -> list[str]:
    """The replica cookies the client sent (``<base>_r0``, ``<base>_r1``, ...)."""
    return [
        name
        for name in (_chunk_name(base, i) for i in range(MAX_CHUNKS))
        if name in cookies
    ]


def join_chunks(cookies: Mapping[str, str], base: str) -> str | None:
    """The replica spread over the client's chunk cookies; None if any is off.

    Chunk 0 starts with ``<count>.<digest>.``: a missing chunk, a chunk from
    another replica, or chunks in another order fail the count or the digest
    (and would fail authentication after that anyway). A chunk longer than
    ``COOKIE_BUDGET`` is none that shoal sent: refused before any hashing,
    so what a client can make shoal join is bounded.
    """
    first = cookies.get(_chunk_name(base, 0))
    if not first or len(first) > COOKIE_BUDGET:
        return None
    count_text, _, rest = first.partition(".")
    digest, sep, body = rest.partition(".")
    # isascii first: str.isdigit() is also true of "³" and "٣", which int() refuses
    # (or reads as 3): found by fuzzing (tests/fuzz/corpus/cookie/).
    if not (sep and count_text.isascii() and count_text.isdigit()) or not (
        1 <= int(count_text) <= MAX_CHUNKS
    ):
        return None
    parts = [body]
    for index in range(1, int(count_text)):
        part = cookies.get(_chunk_name(base, index))
        if part is None or len(part) > COOKIE_BUDGET:
            return None
        parts.append(part)
    wire = "".join(parts)
    try:
        if _digest(wire) != digest:
            return None
    except UnicodeEncodeError:
        return None
    return wire


def split_chunks(wire: str, base: str, per_cookie: int) -> list[tuple[str, str]]:
    """``(cookie name, value)`` pairs carrying ``wire``, each value at most ``per_cookie``."""
    head = f"{_digest(wire)}."
    # The count prefix is at most two digits (MAX_CHUNKS); reserve them.
    size = per_cookie - len(head) - 3
    if size < 64:
        raise ValueError(f"cookie attributes leave {per_cookie} bytes per replica cookie")
    pieces = [wire[i : i + per_cookie] for i in range(size, len(wire), per_cookie)]
    count = 1 + len(pieces)
    if count > MAX_CHUNKS:
        raise ValueError(f"replica needs {count} cookies, more than {MAX_CHUNKS}")
    first = f"{count}.{head}{wire[:size]}"
    return [(_chunk_name(base, 0), first)] + [
        (_chunk_name(base, i), piece) for i, piece in enumerate(pieces, start=1)
    ]


def replica_set_cookies(
    options: CookieOptions,
    wire: str | None,
    clear: bool,
    present: Sequence[str],
    *,
    https: bool,
) -> list[str]:
    """``Set-Cookie`` values that send ``wire`` and drop chunks no longer used."""
    headers: list[str] = []
    sent: set[str] = set()
    if wire is not None:
        longest = _chunk_name(options.name, MAX_CHUNKS - 1)
        overhead = len(set_cookie_header(options, "", https=https, name=longest))
        try:
            pairs = split_chunks(wire, options.name, COOKIE_BUDGET - overhead)
        except ValueError as exc:
            # Only with cookie attributes of several KB: send none rather than fail.
            log.warning("replica not sent: %s", exc)
            pairs, clear = [], True
        for name, value in pairs:
            headers.append(set_cookie_header(options, value, https=https, name=name))
            sent.add(name)
    if wire is not None or clear:
        for name in present:
            if name not in sent:
                headers.append(clear_cookie_header(options, https=https, name=name))
    return headers
