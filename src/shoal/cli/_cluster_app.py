"""The app every node of ``shoal demo`` serves: one page, its JSON, the race routes.

    GET  /                      the page (counts a visit)
    GET  /state.json            what the page shows, read-only: node, session, cart,
                                and the latest session events heard from every node
    POST /login   user=NAME     rotate the id, remember NAME for ``LOGIN_TTL`` seconds
    POST /logout                end the session
    POST /logout-everywhere     end every session of the signed-in user
    POST /cart    item=NAME     append NAME to the cart
    POST /race/POLICY/start     a fresh session for one concurrency run
    POST /race/POLICY/hit?n=N   one of the run's concurrent writes
    GET  /race/POLICY/count     what the run's session kept

A form post from a browser (``Accept: text/html``) is answered with a 303 to
``/``, so the page works without JavaScript; any other client (the page's
``fetch``, curl) gets the state as JSON.

Every node builds the same app with its own ``node_id``; the nodes share
nothing but the store and the replica's secret key, so any node can serve
any request of any session.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from ..clock import Clock
from ..cluster.events import Event
from ..codec import decode_field
from ..ids import hash_id, session_ref
from ..manager import SessionManager
from ..session import Session
from ..wsgi import SessionMiddleware
from ._demo_page import render_page

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..sealing import Secret

__all__ = ["BURST", "LOGIN_TTL", "POLICIES", "NodeApp"]

LOGIN_TTL = 20  # seconds: the sign-in expires by itself, the cart stays
BURST = 50  # concurrent writes per policy in one race
POLICIES = ("lossy", "merge", "optimistic", "serialized")
# Each run's writes: "own key" runs write hit_N (one key per request), the
# others do count += 1 on one key. Merge keeps writes to *different* keys, so
# it is shown on those; on a shared counter it would lose them, as documented.
OWN_KEY = frozenset({"lossy", "merge"})
MAX_FORM = 4096  # bytes of a form body read; the demo's forms are tiny
FEED = 30  # session events the events panel shows, newest first


class Feed:
    """The latest session events this node heard (its own and every other node's)."""

    def __init__(self, size: int = FEED) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, event: Event) -> None:
        entry = {k: event.as_dict()[k] for k in ("event", "node_id", "time", "ref", "detail")}
        with self._lock:
            self._events.appendleft(entry)

    def latest(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)


def _read_form(environ: WSGIEnvironment) -> dict[str, str]:
    fields = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if 0 < length <= MAX_FORM:
        body = environ["wsgi.input"].read(length).decode("utf-8", "replace")
        fields.update(parse_qsl(body))
    return fields


def _wants_html(environ: WSGIEnvironment) -> bool:
    return "text/html" in environ.get("HTTP_ACCEPT", "")


class NodeApp:
    """The WSGI app of one node: the page on ``merge``, one manager per race policy."""

    def __init__(
        self,
        store_url: str,
        *,
        app_id: str,
        node_id: str,
        secret_keys: Sequence[str | bytes | Secret],
        nodes: Sequence[str],
        clock: Clock = time.time,
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.nodes = list(nodes)
        common: dict[str, Any] = {
            "app_id": app_id, "node_id": node_id, "replica": True, "secret_keys": secret_keys,
            # serialized waiters line up BURST deep on one session
            "lock_timeout": 30.0, "clock": clock,
            # every node sends its session events through the store (docs/cluster.md)
            "events": True,
        }  # fmt: skip
        self.manager = SessionManager(store_url, policy="merge", **common)
        # The race managers only send (no listener: no listener thread); under
        # a node id of their own, so the page's manager of this node hears
        # their events through the store as it hears every other node's.
        race = {**common, "node_id": f"{node_id}.race"}
        lossy = SessionManager(store_url, policy="lossy", **race)
        optimistic = SessionManager(store_url, policy="optimistic", **race)
        self.managers = [self.manager, lossy, optimistic]
        self.feed = Feed()  # the events panel
        self.manager.add_listener(self.feed.add)
        page = SessionMiddleware(self._page, self.manager)
        # Each conflict of a run means another of its BURST requests saved,
        # so BURST - 1 re-runs always suffice for every request to get through.
        self._by_policy: dict[str, WSGIApplication] = {
            "lossy": SessionMiddleware(self._race, lossy),
            "merge": page,
            "optimistic": SessionMiddleware(self._race, optimistic, retry_conflicts=BURST),
            "serialized": page,  # session.lock() in the route: per-request serialized
        }
        self._page_app = page

    def close(self) -> None:
        for manager in self.managers:
            manager.close()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path.startswith("/race/"):
            policy = path.split("/")[2]
            if policy in self._by_policy:
                return self._by_policy[policy](environ, start_response)
        return self._page_app(environ, start_response)

    # -- the page ----------------------------------------------------------------

    def _page(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path.startswith("/race/"):
            return self._race(environ, start_response)
        method = environ["REQUEST_METHOD"]
        session: Session = environ["shoal.session"]
        route = _ACTIONS.get(path) if method == "POST" else None
        if method in ("GET", "HEAD") and path in ("/", "/state.json"):
            # HEAD (curl -I, a probe): GET's headers, no body, no visit counted.
            head = method == "HEAD"
            if path == "/state.json":
                answer = _json(start_response, "200 OK", self.state(session))
            else:
                if not head:
                    session["visits"] = session.get("visits", 0) + 1
                state = self.state(session)  # before start_response: shoal saves there
                body = render_page(state, self.nodes).encode()
                answer = _answer(start_response, "200 OK", body, "text/html; charset=utf-8")
            return [b""] if head else answer
        if method == "POST" and path == "/logout-everywhere":
            route = self._logout_everywhere
        if route is None:
            return _json(start_response, "404 Not Found", {"error": "no such route"})
        try:
            route(session, _read_form(environ), self.clock())
        except KeyError as missing:
            return _json(start_response, "400 Bad Request", {"error": f"missing {missing}"})
        if _wants_html(environ):  # a form without JavaScript: back to the page
            start_response("303 See Other", [("Location", "/"), ("Content-Length", "0")])
            return [b""]
        return _json(start_response, "200 OK", self.state(session))

    def state(self, session: Session) -> dict[str, Any]:
        """What the page shows; reads the session, never writes it."""
        data = dict(session)
        user = data.get("user")
        restored = sum((m.replica_stats.restored if m.replica_stats else 0) for m in self.managers)
        return {
            "node": self.node_id,
            "pid": os.getpid(),
            "now": self.clock(),
            # the hash of the id, shortened: the id itself is a credential
            "session": (
                None if session.is_new and not data
                else "a new id, at the end of this request" if session.rotated
                else session_ref(hash_id(session.id))
            ),  # fmt: skip
            "data": data,
            "user": user if isinstance(user, dict) else None,
            "visits": data.get("visits", 0),
            "cart": data.get("cart", []),
            "restored": restored,
            "events": self.feed.latest(),
            **self._devices(session),
        }

    # -- sessions by user --------------------------------------------------------

    def _devices(self, session: Session) -> dict[str, Any]:
        """The signed-in user's sessions, for the "log out everywhere" panel."""
        principal = None if session.invalidated else session.principal
        if principal is None:
            return {"principal": None, "devices": []}
        this = None if session.is_new else hash_id(session.id)
        devices = []
        for info in self.manager.sessions_of(principal):
            record = self.manager.store.load(info.key, now=self.clock()).record
            label = record.fields.get("device") if record is not None else None
            devices.append({
                "ref": session_ref(info.key.id_hash),
                "this": info.key.id_hash == this,
                "device": _device_label(self.manager, label),
            })  # fmt: skip
        return {"principal": principal, "devices": devices}

    def _logout_everywhere(self, session: Session, form: dict[str, str], now: float) -> None:
        principal = session.principal
        if principal is not None:
            self.manager.invalidate_all(principal)
        session.invalidate()  # this browser's cookie is cleared in this very answer

    # -- the race ----------------------------------------------------------------

    def _race(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        parts = (environ.get("PATH_INFO") or "").split("/")  # "", "race", policy, step
        policy, step = (parts[2], parts[3]) if len(parts) == 4 else ("", "")
        session: Session = environ["shoal.session"]
        if policy == "serialized" and step == "hit":
            session.lock()  # before any access: this request runs alone
        if policy not in POLICIES:
            return _json(start_response, "404 Not Found", {"error": "no such policy"})
        if step == "start" and environ["REQUEST_METHOD"] == "POST":
            session["race"] = policy
            if policy not in OWN_KEY:
                session["count"] = 0
        elif step == "hit" and environ["REQUEST_METHOD"] == "POST":
            if policy in OWN_KEY:
                n = dict(parse_qsl(environ.get("QUERY_STRING", ""))).get("n", "0")
                session[f"hit_{n}"] = 1
            else:
                session["count"] = session.get("count", 0) + 1
        elif step != "count" or environ["REQUEST_METHOD"] != "GET":
            return _json(start_response, "404 Not Found", {"error": "no such step"})
        data = dict(session)
        count = (
            sum(1 for key in data if key.startswith("hit_"))
            if policy in OWN_KEY
            else int(data.get("count", 0))
        )
        return _json(start_response, "200 OK", {"node": self.node_id, "count": count})


def _login(session: Session, form: dict[str, str], now: float) -> None:
    name = form["user"].strip()[:40] or "guest"
    # A new id at sign-in (setting the principal rotates it, with no grace): an id planted before it is useless.
    session.principal = name
    session.set("user", {"name": name, "until": now + LOGIN_TTL}, ttl=LOGIN_TTL)
    device = form.get("device", "").strip()[:40]
    if device:  # the panel's second device names itself
        session["device"] = device


def _device_label(manager: SessionManager, data: bytes | None) -> str:
    """The ``device`` value of a stored session, decoded as the page would."""
    if data is None:
        return "a browser"
    try:
        value = decode_field(manager.codec, data)[0]
    except Exception:  # noqa: BLE001 - a label only: never break the page for it
        return "a device"
    return str(value)


def _logout(session: Session, form: dict[str, str], now: float) -> None:
    session.invalidate()


def _add_to_cart(session: Session, form: dict[str, str], now: float) -> None:
    item = form["item"].strip()[:40]
    if item:
        session["cart"] = [*session.get("cart", []), item]


_ACTIONS: dict[str, Callable[[Session, dict[str, str], float], None]] = {
    "/login": _login,
    "/logout": _logout,
    "/cart": _add_to_cart,
}


def _answer(start_response: StartResponse, status: str, body: bytes, kind: str) -> list[bytes]:
    start_response(status, [
        ("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
    ])  # fmt: skip
    return [body]


def _json(start_response: StartResponse, status: str, value: Any) -> list[bytes]:
    return _answer(start_response, status, orjson.dumps(value), "application/json")
