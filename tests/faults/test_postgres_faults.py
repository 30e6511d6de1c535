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

import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("psycopg", reason="the postgres extra is not installed")

import psycopg  # noqa: E402
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
from tests.faults._stream import (  # noqa: E402
    CLIENTS,
    counter_app,
    outage_with_the_defaults,
    private_server,
    serve,
)
from tests.servers import PostgresServer  # noqa: E402
from tests.servers.availability import postgres_unavailable  # noqa: E402

pytestmark = pytest.mark.slow

# Short store timeouts: a request against a dead or hung server ends in
# about 2 s; the HTTP client waits far longer, so a hang would show.
TIMEOUTS = (
    "connect_timeout=2&statement_timeout=2&pool_timeout=2&socket_timeout=3"
    "&reconnect_timeout=3&max_size=8"
)
PATIENCE = 120.0  # bound of every wait for the stream to reach a phase


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The state now (a call, so a type checker does not carry an earlier one over)."""
    return breaker.state


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, with synchronous commits (a crash loses nothing)."""
    with private_server(postgres_unavailable, PostgresServer) as server:
        with psycopg.connect(server.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("ALTER DATABASE postgres SET synchronous_commit = on")
        yield server


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
    with serve(manager, patience=PATIENCE) as stream:
        stream.wait_for_every_client("up", "200", "no traffic")
        private_postgres.kill()
        stream.phase = "down"
        stream.wait_for_every_client("down", "503", "no 503 while down")
        stream.phase = "restarting"
        private_postgres.start()  # same port and data dir: crash recovery
        stream.phase = "back"
        stream.wait_for_every_client("back", "200", "no recovery without an app restart")
    outcomes = stream.summary()
    print(f"{policy}: {outcomes}")
    assert stream.statuses() <= {"200", "503"}, outcomes
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
    with serve(manager, patience=PATIENCE) as stream:
        stream.wait_for_every_client("up", "200", "no traffic")
        stopped = all_processes(private_postgres)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)  # our own children: sockets open, no answers
        try:
            stream.phase = "hung"
            stream.wait_for_every_client("hung", "503", "no 503 while hung")
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        stream.phase = "back"
        stream.wait_for_every_client("back", "200", "no recovery")
    outcomes = stream.summary()
    # No client error: the watchdog ended every request well inside HTTP_TIMEOUT.
    assert stream.statuses() <= {"200", "503"}, outcomes
    stream.check_no_session_lost()


@pytest.mark.parametrize(
    ("fault", "clients"),
    [("kill", 1), ("stop", 1), ("stop", CLIENTS)],
    ids=["sigkill-one-worker", "sigstop-one-worker", "sigstop-threads"],
)
def test_with_the_defaults_an_outage_is_answered_fast_and_heals_itself(
    private_postgres: PostgresServer,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    clients: int,
) -> None:
    """No timeout parameters: one sync worker (``clients=1``) or a threaded one.

    Only the requests in flight when PostgreSQL broke, and one probe per
    cooldown, wait for it; every other request is a fast 503, the log says
    what happened once (and psycopg's pool logger does not repeat it), and
    the same app serves again once the server is back.
    """
    url = f"{private_postgres.url}?table=d_{uuid.uuid4().hex[:8]}"
    manager = SessionManager(url, app_id="defaults", policy="merge")
    stopped: list[int] = []

    def break_it() -> None:
        if fault == "kill":
            private_postgres.kill()
        else:
            stopped.extend(all_processes(private_postgres))
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)

    def heal() -> None:
        if fault == "kill":
            private_postgres.start()
        else:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    with serve(manager, patience=PATIENCE, clients=clients) as stream:
        stream.wait_for_every_client("up", "200", "no traffic")
        try:
            numbers = outage_with_the_defaults(stream, caplog, fault=break_it, heal=heal)
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):  # a backend that ended
                    os.kill(pid, signal.SIGCONT)
    print(f"postgresql {fault}, {clients} client(s): {numbers}")
    stream.check_no_session_lost()


def test_the_open_breaker_fails_fast_and_a_probe_closes_it(
    private_postgres: PostgresServer, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(0.0)
    # Counting only (slow=inf): the failures here wait out pool_timeout, and
    # by default the first of those would open it at once.
    settings = BreakerSettings(threshold=3, window=60, cooldown=10, slow=float("inf"))
    breaker = CircuitBreaker(settings, clock=clock)
    store = BreakerStore(PostgresStore.from_url(url), breaker)
    manager = SessionManager(store, app_id="breaker")
    client = Client(SessionMiddleware(counter_app, manager))

    def request() -> tuple[int, str]:
        """Status and the logged cause of a 503."""
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="shoal"):  # refusals log at DEBUG
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
