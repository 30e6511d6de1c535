"""The harness of the fault tests: a stream of real HTTP requests through the middleware.

``serve(manager)`` runs ``SessionMiddleware(counter_app, manager)`` on a
threaded werkzeug server and starts ``CLIENTS`` client threads, each with its
own session, sending ``/incr`` until the stream is finished. Every request
records an ``Outcome``: the phase the test was in when it started and when it
ended, the HTTP status (or the client's own error: a hang shows as one, since
``HTTP_TIMEOUT`` is far longer than any store timeout), the counter a 200
answered and the cookie the client held. A test moves ``stream.phase`` along
as it breaks and heals the store, waits for outcomes, then checks them.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from werkzeug.serving import make_server

from shoal import SessionManager
from shoal.wsgi import SessionMiddleware
from tests.servers import ServerProcess
from tests.servers.availability import skip_or_fail

__all__ = [
    "CLIENTS",
    "HTTP_TIMEOUT",
    "Outcome",
    "Stream",
    "counter_app",
    "private_server",
    "serve",
]

HTTP_TIMEOUT = 60.0  # a request still running after this is a hang
CLIENTS = 4

S = TypeVar("S", bound=ServerProcess)


def counter_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """/incr adds one to the session's counter and answers it."""
    session = environ["shoal.session"]
    session["n"] = count = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])  # commits the session
    return [str(count).encode()]


@dataclass
class Outcome:
    phase: str  # when the request started
    ended: str  # when its answer came
    status: str  # "200", "503", ... or "client error ..."
    count: int | None  # the counter a 200 answered
    cookie: str  # the session cookie the client held afterwards


@dataclass
class Stream:
    """CLIENTS threads sending requests until stopped, each recording its outcomes.

    ``patience`` bounds every wait for the stream to reach a state.
    """

    port: int
    patience: float = 90.0
    phase: str = "up"
    outcomes: dict[int, list[Outcome]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for client in range(CLIENTS):
            self.outcomes[client] = []
            thread = threading.Thread(target=self._client, args=(client,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _client(self, client: int) -> None:
        cookie = ""
        for _ in range(100_000):  # bounded; ended by `stop` long before
            if self.stop.is_set():
                return
            phase = self.phase
            count = None
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
                conn.request("GET", "/incr", headers={"Cookie": cookie} if cookie else {})
                response = conn.getresponse()
                body = response.read()
                conn.close()
                status = str(response.status)
                if status == "200":
                    count = int(body)
                for header in response.headers.get_all("Set-Cookie") or []:
                    if header.startswith("shoal="):
                        cookie = header.split(";", 1)[0]
            except Exception as exc:  # a hang or a dead worker: the test fails on it
                status = f"client error {type(exc).__name__}: {exc}"
            with self.lock:
                self.outcomes[client].append(Outcome(phase, self.phase, status, count, cookie))
            if status != "200":
                time.sleep(0.05)  # a 503 may come back at once: don't spin

    # -- counting --------------------------------------------------------------

    def requests(self, phase: str, status: str) -> int:
        """Requests that started in ``phase`` and got ``status``."""
        with self.lock:
            return sum(
                o.phase == phase and o.status == status
                for outcomes in self.outcomes.values()
                for o in outcomes
            )

    def clients(self, phase: str, status: str) -> int:
        """Clients that had at least one ``status`` in ``phase``."""
        with self.lock:
            return sum(
                any(o.phase == phase and o.status == status for o in outcomes)
                for outcomes in self.outcomes.values()
            )

    def answered_while(self, phase: str, status: str) -> int:
        """Requests that started and ended in ``phase`` with ``status``."""
        with self.lock:
            return sum(
                o.phase == o.ended == phase and o.status == status
                for outcomes in self.outcomes.values()
                for o in outcomes
            )

    def summary(self) -> dict[tuple[str, str], int]:
        """How many requests of each (phase, status)."""
        with self.lock:
            return dict(
                Counter((o.phase, o.status) for outs in self.outcomes.values() for o in outs)
            )

    def statuses(self) -> set[str]:
        return {status for (_, status) in self.summary()}

    # -- waiting and checking -------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        """Until ``predicate()`` (bounded by ``patience``; else fail saying ``what``)."""
        deadline = time.monotonic() + self.patience
        while not predicate():
            assert time.monotonic() < deadline, f"{what}; outcomes: {self.summary()}"
            time.sleep(0.02)

    def wait_for_every_client(self, phase: str, status: str, what: str) -> None:
        """Until every client had a ``status`` in ``phase``."""
        self.wait_for(lambda: self.clients(phase, status) == CLIENTS, what)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(HTTP_TIMEOUT + 10)
            assert not thread.is_alive(), "a client thread hung"

    def check_no_session_lost(self) -> None:
        """Each client kept one cookie, and its counter never went back."""
        for client, outcomes in self.outcomes.items():
            answered = [o for o in outcomes if o.count is not None]
            assert len({o.cookie for o in answered}) == 1, f"client {client} was logged out"
            counts = [o.count for o in answered if o.count is not None]
            # A 503 may still have committed (the answer was lost), so a
            # counter may skip; it never repeats or goes back.
            assert counts == sorted(set(counts)), f"client {client}: {counts}"


@contextlib.contextmanager
def serve(manager: SessionManager, *, patience: float = 90.0) -> Iterator[Stream]:
    """The middleware on a real threaded HTTP server, and a running request stream.

    On exit the stream is finished, the server shut down and ``manager`` closed.
    """
    server = make_server("127.0.0.1", 0, SessionMiddleware(counter_app, manager), threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    stream = Stream(server.server_port, patience=patience)
    try:
        stream.start()
        yield stream
    finally:
        stream.finish()
        server.shutdown()
        serving.join(HTTP_TIMEOUT)
        manager.close()


@contextlib.contextmanager
def private_server(unavailable: Callable[[], str | None], make: Callable[[], S]) -> Iterator[S]:
    """A server of the calling test's own (killing it disturbs no other test).

    Skipped (failed in CI) when ``unavailable()`` gives a reason; stopped and
    removed when the test ends.
    """
    reason = unavailable()
    if reason is not None:
        skip_or_fail(reason)
    with make() as server:
        yield server
