"""PostgreSQL dies or hangs under a stream of real HTTP requests; the breaker.

A threaded WSGI server (werkzeug) runs the middleware on a private
PostgreSQL; a few client threads keep sending requests that change their
session. The server is then SIGKILLed (a crash: every backend dies, pooled
connections are dead), or SIGSTOPped (a hang: the kernel keeps the sockets
open and nothing answers, which only the store's watchdog bounds). Every
request must end with 200 or 503 (never a 500, never an HTTP client error:
the client's own timeout is far longer, so a hang shows as one), and once
the server is back on the same port the same app object serves 200 again,
with no restart: the pool recovers by itself. No session is lost: commits
are synchronous on this server, and a client keeps its cookie throughout.

With the circuit breaker (its clock in the test's hands), requests fail
fast while it is open, without reaching the pool, and the first request
after the cooldown is the probe that closes it once the server is back.
"""

from __future__ import annotations

import http.client
import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("psycopg", reason="the postgres extra is not installed")

import psycopg  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402
from werkzeug.test import Client  # noqa: E402

from shoal import ManualClock, SessionManager  # noqa: E402
from shoal.stores import open_store  # noqa: E402
from shoal.stores._breaker import (  # noqa: E402
    BreakerSettings,
    BreakerState,
    BreakerStore,
    CircuitBreaker,
)
from shoal.stores.postgresql import PostgresStore  # noqa: E402
from shoal.wsgi import SessionMiddleware  # noqa: E402
from tests.servers import PostgresServer  # noqa: E402
from tests.servers.availability import postgres_unavailable, skip_or_fail  # noqa: E402

pytestmark = pytest.mark.slow

# Short store timeouts: a request against a dead or hung server ends in
# about 2 s; the HTTP client waits far longer, so a hang would show.
TIMEOUTS = (
    "connect_timeout=2&statement_timeout=2&pool_timeout=2&socket_timeout=3"
    "&reconnect_timeout=3&max_size=8"
)
HTTP_TIMEOUT = 60.0  # a request still running after this is a hang
PATIENCE = 120.0  # bound of every wait for the stream to reach a phase
CLIENTS = 4


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
    status: str
    count: int | None  # the counter a 200 answered
    cookie: str


@dataclass
class Stream:
    """CLIENTS threads sending requests until stopped, each recording its outcomes."""

    port: int
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

    def count(self, phase: str, status: str) -> int:
        """Clients that had at least one ``status`` in ``phase``."""
        with self.lock:
            return sum(
                any(o.phase == phase and o.status == status for o in outcomes)
                for outcomes in self.outcomes.values()
            )

    def wait_for(self, phase: str, status: str, what: str) -> None:
        """Until every client had a ``status`` in ``phase`` (bounded by PATIENCE)."""
        deadline = time.monotonic() + PATIENCE
        while self.count(phase, status) < CLIENTS:
            assert time.monotonic() < deadline, f"{what}; outcomes: {self.summary()}"
            time.sleep(0.02)

    def answered_while(self, phase: str, status: str) -> int:
        """Requests that started and ended in ``phase`` with ``status``."""
        with self.lock:
            return sum(
                o.phase == o.ended == phase and o.status == status
                for outcomes in self.outcomes.values()
                for o in outcomes
            )

    def summary(self) -> dict[tuple[str, str], int]:
        with self.lock:
            return dict(
                Counter((o.phase, o.status) for outs in self.outcomes.values() for o in outs)
            )

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


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The state now (a call, so a type checker does not carry an earlier one over)."""
    return breaker.state


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, with synchronous commits (a crash loses nothing)."""
    reason = postgres_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    with PostgresServer() as server:
        with psycopg.connect(server.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("ALTER DATABASE postgres SET synchronous_commit = on")
        yield server


def serve(manager: SessionManager) -> tuple[Stream, Callable[[], None]]:
    """The middleware on a real threaded HTTP server, and a running request stream."""
    server = make_server("127.0.0.1", 0, SessionMiddleware(counter_app, manager), threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    stream = Stream(server.server_port)

    def shutdown() -> None:
        stream.finish()
        server.shutdown()
        serving.join(HTTP_TIMEOUT)
        manager.close()

    stream.start()
    return stream, shutdown


@pytest.fixture
def url(private_postgres: PostgresServer) -> str:
    return f"{private_postgres.url}?table=f_{uuid.uuid4().hex[:8]}&{TIMEOUTS}"


@pytest.mark.parametrize("policy", ["merge", "serialized"])
def test_sigkill_gives_503_and_the_pool_recovers_on_restart(
    private_postgres: PostgresServer, url: str, policy: str
) -> None:
    # No breaker here: the pool alone must recover. A lease taken just before
    # the crash cannot be released while the server is down: it holds its
    # session until it expires, so leases are short here.
    manager = SessionManager(
        f"{url}&breaker=off", app_id="faults", policy=policy, lock_lease=4, lock_timeout=2
    )
    stream, shutdown = serve(manager)
    try:
        stream.wait_for("up", "200", "no traffic")
        private_postgres.kill()
        stream.phase = "down"
        stream.wait_for("down", "503", "no 503 while down")
        stream.phase = "restarting"
        private_postgres.start()  # same port and data dir: crash recovery
        stream.phase = "back"
        stream.wait_for("back", "200", "no recovery without an app restart")
    finally:
        shutdown()
    outcomes = stream.summary()
    print(f"{policy}: {outcomes}")
    assert {status for (_, status) in outcomes} <= {"200", "503"}, outcomes
    # A request that started while down may wait in the pool (pool_timeout)
    # past the restart and then succeed; one that also ended while down cannot.
    assert stream.answered_while("down", "200") == 0, outcomes
    stream.check_no_session_lost()


def all_processes(server: PostgresServer) -> list[int]:
    """The postmaster first (so it forks no new backend), then its backends (from /proc)."""
    postmaster = server.pid
    assert postmaster is not None
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stat = handle.read()
            except OSError:
                continue  # gone meanwhile
            # Fields after the ")" that ends the command name: state, ppid, ...
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry))
    return [postmaster, *children]


def test_a_hung_server_gives_503_within_the_socket_timeout(
    private_postgres: PostgresServer, url: str
) -> None:
    manager = SessionManager(f"{url}&breaker=off", app_id="faults")
    stream, shutdown = serve(manager)
    try:
        stream.wait_for("up", "200", "no traffic")
        stopped = all_processes(private_postgres)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)  # our own children: sockets open, no answers
        try:
            stream.phase = "hung"
            stream.wait_for("hung", "503", "no 503 while hung")
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        stream.phase = "back"
        stream.wait_for("back", "200", "no recovery")
    finally:
        shutdown()
    outcomes = stream.summary()
    # No client error: the watchdog ended every request well inside HTTP_TIMEOUT.
    assert {status for (_, status) in outcomes} <= {"200", "503"}, outcomes
    stream.check_no_session_lost()


def test_the_open_breaker_fails_fast_and_a_probe_closes_it(
    private_postgres: PostgresServer, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(0.0)
    breaker = CircuitBreaker(BreakerSettings(threshold=3, window=60, cooldown=10), clock=clock)
    store = BreakerStore(PostgresStore.from_url(url), breaker)
    manager = SessionManager(store, app_id="breaker")
    client = Client(SessionMiddleware(counter_app, manager))

    def request() -> tuple[int, str]:
        """Status and the logged cause of a 503."""
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="shoal"):
            response = client.get("/incr")
        causes = [r.getMessage() for r in caplog.records if r.name == "shoal"]
        return response.status_code, " | ".join(causes)

    try:
        assert request() == (200, "")
        private_postgres.kill()
        for _ in range(3):
            status, cause = request()
            assert status == 503 and "circuit open" not in cause, cause
        assert state_of(breaker) is BreakerState.OPEN
        for _ in range(5):
            status, cause = request()
            # Refused by the breaker before the store was asked: no pool wait.
            assert status == 503 and "circuit open after 3 consecutive failures" in cause, cause
        assert breaker.failures == 3, "refused calls do not reach the store"

        private_postgres.start()
        assert "circuit open" in request()[1], "still cooling down: the server is not asked"
        clock.advance(10)
        # The probe may meet the pool still reconnecting: it fails, the
        # breaker opens for another cooldown, the next probe goes. Bounded.
        for _ in range(30):
            status, cause = request()
            if status == 200:
                break
            assert "circuit open" not in cause, "after a cooldown, the next call is the probe"
            clock.advance(10)
        assert status == 200
        assert state_of(breaker) is BreakerState.CLOSED
        assert [request()[0] for _ in range(3)] == [200, 200, 200]
    finally:
        manager.close()


def test_open_store_gives_every_manager_of_the_process_one_breaker(url: str) -> None:
    one = SessionManager(url, app_id="a")
    two = SessionManager(open_store(url), app_id="b")
    try:
        assert isinstance(one.store, BreakerStore) and isinstance(two.store, BreakerStore)
        assert one.store.breaker is two.store.breaker
    finally:
        one.close()
        two.close()
