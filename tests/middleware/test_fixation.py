"""Session fixation in every transport (issue 14): a planted id never becomes the victim's.

Two attacks, each through the cookie, the ``X-Session-Id`` header and a
transport of the application's own (here the id in a query parameter, the
shape of a URL or RPC-argument transport):

- an id the attacker *made up* is never adopted: the first write stores the
  session under a fresh id, and nothing is stored under the planted one;
- an id the attacker *got from shoal* (his own session) and planted on the
  victim stops working at the victim's login (``rotate(grace=0)``): the
  attacker's next request with it finds no session, not the victim's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import pytest

from shoal import SessionManager
from shoal.ids import hash_id, new_id
from shoal.manager import CommitOutcome
from shoal.stores.base import RecordKey, Store
from shoal.transports import CookieTransport, HeaderGetter, Headers, HeaderTransport, Incoming
from shoal.transports import Transport
from shoal.wsgi import SessionMiddleware

Environ = dict[str, Any]


class QueryTransport:
    """The id in ``?sid=`` (read through a header the test sets), sent back in ``X-Sid``."""

    replica = False

    def read(self, header: HeaderGetter) -> Incoming:
        values = parse_qs(header("X-Test-Query") or "").get("sid", [])
        return Incoming(session_id=values[0] if values else None)

    def response_headers(
        self, outcome: CommitOutcome, incoming: Incoming, *, https: bool, vary: bool
    ) -> Headers:
        if outcome.send_id is not None:
            return [("X-Sid", outcome.send_id)]
        return [("X-Sid", "")] if outcome.clear else []


def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """/visit writes a visit, /login?user rotates at login, /whoami reads the user."""
    session = environ["shoal.session"]
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    body = b""
    if path == "/visit":
        session["visits"] = session.get("visits", 0) + 1
    elif path == "/login":
        session.rotate(grace=0)
        session["user"] = query
    elif path == "/whoami":
        body = str(session.get("user", "-")).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


class Wire:
    """Sends an id and reads the one the response hands back, for one transport."""

    def __init__(self, kind: str, manager: SessionManager) -> None:
        self.kind = kind
        transports: dict[str, Transport] = {
            "cookie": CookieTransport(manager.cookie),
            "header": HeaderTransport(),
            "custom": QueryTransport(),
        }
        transport = transports[kind]
        self.wsgi = SessionMiddleware(app, manager, transport=transport)

    def call(self, path: str, session_id: str | None) -> tuple[bytes, str | None]:
        """``(body, the id the response sets or None)``."""
        route, _, query = path.partition("?")
        environ: Environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": route, "QUERY_STRING": query,
            "wsgi.url_scheme": "https", "SERVER_NAME": "localhost", "SERVER_PORT": "443",
        }  # fmt: skip
        if session_id is not None:
            name = {"cookie": "HTTP_COOKIE", "header": "HTTP_X_SESSION_ID",
                    "custom": "HTTP_X_TEST_QUERY"}[self.kind]
            environ[name] = {"cookie": f"shoal={session_id}", "header": session_id,
                             "custom": f"sid={session_id}"}[self.kind]
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
            assert status == "200 OK"
            answer["headers"] = headers
            return lambda data: None

        body = b"".join(self.wsgi(environ, start_response))
        return body, self._sent(answer["headers"])

    def _sent(self, headers: list[tuple[str, str]]) -> str | None:
        for name, value in headers:
            if self.kind == "cookie" and name == "Set-Cookie" and value.startswith("shoal="):
                return value.split(";", 1)[0].partition("=")[2] or None
            if (self.kind, name) in (("header", "X-Session-Id"), ("custom", "X-Sid")):
                return value or None
        return None


TRANSPORTS = ["cookie", "header", "custom"]


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_made_up_id_is_never_adopted(local_store: Store, app_id: str, kind: str) -> None:
    manager = SessionManager(local_store, app_id=app_id)
    wire = Wire(kind, manager)
    planted = new_id()  # well-formed, never issued
    _, sent = wire.call("/visit", planted)
    assert sent is not None and sent != planted
    assert local_store.load(RecordKey(app_id, hash_id(planted)), now=manager.clock()).record is None
    assert [info.key.id_hash for info in local_store.records(app_id)] == [hash_id(sent)]


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_an_issued_id_planted_on_a_victim_dies_at_login(
    local_store: Store, app_id: str, kind: str
) -> None:
    manager = SessionManager(local_store, app_id=app_id)
    wire = Wire(kind, manager)
    _, planted = wire.call("/visit", None)  # the attacker's own, real session
    assert planted is not None
    body, victims = wire.call("/login?victim", planted)  # the victim logs in with it
    assert victims is not None and victims != planted
    assert wire.call("/whoami", victims)[0] == b"victim"
    body, sent = wire.call("/whoami", planted)  # the attacker tries the planted id
    assert body == b"-" and sent != victims


@pytest.mark.parametrize("replica", [False, True], ids=["store", "store+replica"])
def test_an_id_of_one_app_opens_nothing_in_another_on_the_same_store(
    local_store: Store, app_id: str, replica: bool
) -> None:
    """Cross-app confusion: records are keyed by (app_id, hash); replicas bind the app_id."""
    keys: dict[str, Any] = {"replica": True, "secret_keys": ["x" * 8 + "0123456789abcdefghijklmnopqrstuv"]}
    shop = SessionManager(local_store, app_id=f"{app_id}-shop", **(keys if replica else {}))
    admin = SessionManager(local_store, app_id=f"{app_id}-admin", **(keys if replica else {}))
    session = shop.begin(None)
    session["user"] = "ada"
    outcome = shop.commit(session)
    assert outcome.send_id is not None
    other = admin.begin(outcome.send_id, replica=outcome.replica)
    assert other.get("user") is None and other.id != outcome.send_id  # never adopted
    admin.commit(other)
