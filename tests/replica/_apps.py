"""A demo WSGI application, nodes and a round-robin balancer for replica tests."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from werkzeug.test import Client, TestResponse

from shoal import ManualClock, SessionManager
from shoal.stores.memory import MemoryStore
from shoal.wsgi import SessionMiddleware

Environ = dict[str, Any]

NEW_KEY = "replica-test-key-new-" + "n" * 32
OLD_KEY = "replica-test-key-old-" + "o" * 32
OTHER_KEY = "replica-test-key-foreign-" + "f" * 32


def demo_app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Routes over the session; every answer is plain text or JSON.

    /set?k=v  /get?k  /ttl?k=v (900 s)  /big?k=n (n random bytes, base64)
    /dump  /logout  /login?user  /flash?msg  /flashes  /issue?name  /consume?name=token
    """
    session = environ["shoal.session"]
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    pairs = parse_qsl(query, keep_blank_values=True)
    body: bytes = b""
    if path == "/set":
        for key, value in pairs:
            session[key] = value
    elif path == "/get":
        body = str(session.get(query, "-")).encode()
    elif path == "/ttl":
        for key, value in pairs:
            session.set(key, value, ttl=900)
    elif path == "/big":
        key, size = pairs[0]
        raw = random.Random(size).randbytes(int(size))
        session[key] = base64.b64encode(raw).decode()
    elif path == "/dump":
        body = orjson.dumps({k: session[k] for k in sorted(session) if not k.startswith("_shoal")})
    elif path == "/logout":
        session.invalidate()
    elif path == "/login":
        session.rotate(grace=0)  # at login: the pre-login id dies at once
        session["user"] = query
    elif path == "/flash":
        session.flash(query)
    elif path == "/flashes":
        body = orjson.dumps([flash.message for flash in session.pop_flashes()])
    elif path == "/issue":
        body = session.issue_token(query).encode()
    elif path == "/consume":
        [(name, token)] = pairs
        body = b"yes" if session.consume_token(name, token) else b"no"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


@dataclass
class Node:
    """One application server: its own manager (and store), restartable."""

    make: Callable[[], SessionManager]
    manager: SessionManager = field(init=False)

    def __post_init__(self) -> None:
        self.manager = self.make()

    def restart(self) -> None:
        """A node kill: a fresh process, so a fresh in-memory store."""
        self.manager.close()
        self.manager = self.make()

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        return SessionMiddleware(demo_app, self.manager)(environ, start_response)


@dataclass
class RoundRobin:
    """A non-sticky balancer: request n goes to node n mod len(nodes)."""

    nodes: list[Node]
    served: list[int] = field(default_factory=list)

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        index = len(self.served) % len(self.nodes)
        self.served.append(index)
        return self.nodes[index](environ, start_response)


def memory_node(clock: ManualClock, app_id: str, keys: list[str] | None = None, **kw: Any) -> Node:
    return Node(
        lambda: SessionManager(
            MemoryStore(), app_id=app_id, clock=clock, replica=True,
            secret_keys=keys or [NEW_KEY], **kw,
        )
    )


def set_cookies(response: TestResponse) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def replica_cookies(response: TestResponse) -> dict[str, str]:
    """Replica chunk cookies this response sets (name -> value; '' = cleared)."""
    found: dict[str, str] = {}
    for header in set_cookies(response):
        name, _, rest = header.partition("=")
        if "_r" in name:
            found[name] = rest.split(";", 1)[0]
    return found


SESSION_COOKIES = ["shoal"] + [f"shoal_r{i}" for i in range(32)]


def jar(client: Client) -> dict[str, str]:
    """The session and replica cookies the client holds, name -> value."""
    held = {name: client.get_cookie(name) for name in SESSION_COOKIES}
    return {name: cookie.value for name, cookie in held.items() if cookie is not None}


def load_jar(client: Client, cookies: dict[str, str]) -> None:
    """Make the client hold exactly ``cookies``."""
    for name in list(jar(client)):
        client.delete_cookie(name)
    for name, value in cookies.items():
        client.set_cookie(name, value)


def dump(client: Client) -> dict[str, Any]:
    response = client.get("/dump")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = orjson.loads(response.data)
    return result
