"""Fuzz targets: every parser a client's bytes reach, each as ``target(data: bytes)``.

Shared by the bounded hypothesis tests in CI (``test_fuzz.py``) and the
atheris harness for long runs (``fuzz/fuzz_shoal.py``). A target returns
normally for every input; an ``AssertionError`` is a broken invariant and
any other exception is an uncaught error, i.e. a 500 in production. Both
are bugs: add the input to ``tests/fuzz/corpus/<target>/`` with the fix.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterable
from typing import Any, Final

from shoal import SessionManager
from shoal._replay import UnreadableBody, capture
from shoal.asgi import ASGIApp, Message, Scope
from shoal.asgi import SessionMiddleware as AsgiSessionMiddleware
from shoal.asgi import _capture
from shoal.codec import JsonCodec, decode_field
from shoal.cookies import CookieOptions, parse_cookie_header
from shoal.errors import DecodeError
from shoal.ids import hash_id, is_well_formed
from shoal.replica import Replicator, wire_gen
from shoal.stores.base import RecordKey
from shoal.transports import CookieTransport, HeaderTransport, join_chunks
from shoal.wsgi import SessionMiddleware

__all__ = ["TARGETS", "Target", "exchange"]

Target = Callable[[bytes], None]
SECRET: Final = "fuzz-secret-key-0123456789abcdefghijklmnopq"
NOW: Final = 1_800_000_000.0
_COOKIES: Final = CookieTransport(CookieOptions(), replica=True)
_HEADER: Final = HeaderTransport()
_REPLICATOR: Final = Replicator(
    app_id="fuzz", secret_keys=[SECRET], max_bytes=6144, idle_timeout=1800
)
_KEY: Final = RecordKey("fuzz", hash_id("A" * 43))
_MANAGER: Final = SessionManager("memory://", app_id="fuzz", replica=True, secret_keys=[SECRET])


def _text(data: bytes) -> str:
    """Bytes as a WSGI server hands header values over: latin-1, every byte a character."""
    return data.decode("latin-1")


def _wide(data: bytes) -> str:
    """Bytes as any text, non-Latin digits (``³``, ``٣``) and lone surrogates included."""
    return data.decode("utf-8", "surrogateescape")


def cookie(data: bytes) -> None:
    """The Cookie header: parsed into name -> value, then into an id and a replica."""
    for text in (_text(data), _wide(data)):
        cookies = parse_cookie_header(text)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in cookies.items())
        incoming = _COOKIES.read_cookie_header(text)
        assert incoming.session_id is None or isinstance(incoming.session_id, str)
        assert incoming.replica is None or isinstance(incoming.replica, str)


def session_id(data: bytes) -> None:
    """A client's id: checked for shape, and never adopted (fixation)."""
    for text in (_text(data), _wide(data)):
        if is_well_formed(text):
            assert len(text) == 43 and text.isascii()
            hash_id(text)
        session = _MANAGER.begin(text)
        assert session.get("seen") is None  # loads: nothing is stored under a client's id
        outcome = _MANAGER.commit(session)
        assert session.is_new and session.id != text and outcome.send_id is None


def header(data: bytes) -> None:
    """The header transport: ``X-Session-Id`` as sent."""
    for text in (_text(data), _wide(data)):
        incoming = _HEADER.read(lambda name: text)
        assert incoming.session_id is None or isinstance(incoming.session_id, str)
        assert incoming.replica is None


def replica(data: bytes) -> None:
    """A replica: its public header, its chunks, its unsealing. Nothing forged opens."""
    for text in (_text(data), _wide(data)):
        gen = wire_gen(text)
        assert gen is None or gen >= 0
        assert _REPLICATOR.open(_KEY, text, NOW) is None
        chunks = {f"shoal_r{i}": part for i, part in enumerate(text.split("|"))}
        wire = join_chunks(chunks, "shoal")
        if wire is not None:
            assert _REPLICATOR.open(_KEY, wire, NOW) is None


def codec(data: bytes) -> None:
    """A stored field from another codec, version or a corrupted store: ``DecodeError`` only."""
    try:
        decode_field(JsonCodec(), data)
    except DecodeError:
        pass


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    _start_response.status = status  # type: ignore[attr-defined]
    return lambda chunk: None


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = environ["shoal.session"]
    body = repr(session.get("k")).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


_WSGI: Final = SessionMiddleware(_app, _MANAGER)


def request(data: bytes) -> None:
    """A whole request through the WSGI middleware: any Cookie header gives a 200."""
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "",
        "wsgi.url_scheme": "https", "SERVER_NAME": "localhost", "SERVER_PORT": "443",
        "HTTP_COOKIE": _text(data),
    }  # fmt: skip
    body = b"".join(_WSGI(environ, _start_response))
    assert _start_response.status == "200 OK", (_start_response.status, body)  # type: ignore[attr-defined]
    assert body == b"None"  # a forged cookie never reaches a stored session


async def exchange(asgi: ASGIApp, scope: Scope) -> list[Message]:
    """The messages ``asgi`` sends for a request of ``scope`` without a body."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await asgi(scope, receive, send)
    return sent


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    body = repr(scope["session"].get("k")).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


_ASGI: Final = AsgiSessionMiddleware(_asgi_app, _MANAGER)


def asgi_request(data: bytes) -> None:
    """A whole request through the ASGI middleware, on the async path: each line of
    ``data`` a ``cookie`` header of its own (HTTP/2 sends one per cookie); a 200."""
    scope: Scope = {
        "type": "http", "method": "GET", "scheme": "https", "path": "/", "query_string": b"",
        "headers": [(b"cookie", line) for line in data.split(b"\n")],
    }  # fmt: skip
    sent = asyncio.run(exchange(_ASGI, scope))
    assert sent[0]["status"] == 200, sent
    assert sent[1]["body"] == b"None"  # a forged cookie never reaches a stored session


def _plain_length(text: str) -> int | None:
    text = text.strip(" \t")
    return int(text) if text.isascii() and text.isdigit() else None


def content_length(data: bytes) -> None:
    """``Content-Length`` as the retry middlewares read it (WSGI and ASGI): digits only."""
    text = _text(data)
    body = b"x" * 64
    environ = {"CONTENT_LENGTH": text, "wsgi.input": io.BytesIO(body)}
    try:
        replay = capture(environ, 64)
    except UnreadableBody:
        replay = None  # declared more than was sent: the middleware answers 400
    if replay is not None and text.strip():
        assert _plain_length(text) == len(replay.body), (text, len(replay.body))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "headers": [(b"content-length", data)]}
    captured = asyncio.run(_capture(scope, receive, 64))
    if captured is not None:
        assert _plain_length(text.strip()) is not None, text  # asgi strips all whitespace


TARGETS: Final[dict[str, Target]] = {
    "cookie": cookie,
    "session_id": session_id,
    "header": header,
    "replica": replica,
    "codec": codec,
    "request": request,
    "asgi_request": asgi_request,
    "content_length": content_length,
}
