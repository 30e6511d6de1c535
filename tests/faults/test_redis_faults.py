"""Redis dies, hangs or fails over under a stream of real HTTP requests.

A threaded WSGI server (werkzeug) runs the middleware on a private Redis; a
few client threads keep sending requests that change their session. Then the
server is SIGKILLed (a crash: its connections are reset, persistence is off),
or SIGSTOPped (a hung server: connections stay open and nothing answers).
Every request must end with 200 or 503 (never a 500, never an error of the
HTTP client), within its socket timeouts (the HTTP client's own timeout is
far longer, so a hang shows as a client error), and once the server is back
on the same port the same app object serves 200 again, with no restart.

On a Cluster with replicas, a master is killed and its replica promoted: the
sessions saved after the failover are fine; what the failover may lose is
in docs/stores-redis.md.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from werkzeug.test import Client  # noqa: E402

from shoal import SessionManager  # noqa: E402
from shoal.ids import hash_id  # noqa: E402
from shoal.stores import open_store  # noqa: E402
from shoal.stores.base import RecordKey  # noqa: E402
from shoal.stores.redis import RedisStore  # noqa: E402
from shoal.wsgi import SessionMiddleware  # noqa: E402
from tests.faults._stream import (  # noqa: E402
    CLIENTS,
    Stream,
    counter_app,
    outage_with_the_defaults,
    private_server,
    serve,
)
from tests.servers import RedisServer  # noqa: E402
from tests.servers.availability import redis_unavailable  # noqa: E402

pytestmark = pytest.mark.slow

TIMEOUTS = "socket_timeout=1.5&socket_connect_timeout=1&pool_timeout=1"
PATIENCE = 90.0  # bound of every wait for the stream to reach a phase


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own: killing it disturbs no other test."""
    with private_server(redis_unavailable, RedisServer) as server:
        yield server


@pytest.fixture
def served(private_redis: RedisServer, request: pytest.FixtureRequest) -> Iterator[Stream]:
    """The middleware on a real threaded HTTP server, and a running request stream."""
    policy = getattr(request, "param", "merge")
    manager = SessionManager(f"{private_redis.url}?{TIMEOUTS}", app_id="faults", policy=policy)
    with serve(manager, patience=PATIENCE) as stream:
        stream.wait_for(lambda: stream.requests("up", "200") >= 3 * CLIENTS, "no traffic")
        yield stream


@pytest.mark.parametrize("served", ["merge", "serialized"], indirect=True)
def test_sigkill_gives_503_and_the_app_recovers_on_restart(
    served: Stream, private_redis: RedisServer
) -> None:
    stream = served
    private_redis.kill()
    stream.phase = "down"
    stream.wait_for(lambda: stream.requests("down", "503") >= 3 * CLIENTS, "no 503 while down")
    stream.phase = "restarting"
    private_redis.start()  # same port, empty (persistence is off, as after a crash)
    stream.phase = "back"
    stream.wait_for(lambda: stream.requests("back", "200") >= 3 * CLIENTS, "no recovery")
    stream.finish()
    outcomes = stream.summary()
    assert stream.statuses() <= {"200", "503"}, outcomes
    # Started after the kill and before the restart: no store to answer.
    assert stream.requests("down", "200") == 0, outcomes


def test_a_hung_server_gives_503_within_the_socket_timeout(
    served: Stream, private_redis: RedisServer
) -> None:
    stream = served
    pid = private_redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # our own child: accepts connections, answers nothing
    try:
        stream.phase = "hung"
        stream.wait_for(lambda: stream.requests("hung", "503") >= 2 * CLIENTS, "no 503 while hung")
    finally:
        os.kill(pid, signal.SIGCONT)
    stream.phase = "back"
    stream.wait_for(lambda: stream.requests("back", "200") >= 3 * CLIENTS, "no recovery")
    stream.finish()
    outcomes = stream.summary()
    # No client error: every request ended well inside HTTP_TIMEOUT.
    assert stream.statuses() <= {"200", "503"}, outcomes


# -- the default timeouts and breaker ------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "clients"),
    [("kill", 1), ("stop", 1), ("stop", CLIENTS)],
    ids=["sigkill-one-worker", "sigstop-one-worker", "sigstop-threads"],
)
def test_with_the_defaults_an_outage_is_answered_fast_and_heals_itself(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture, fault: str, clients: int
) -> None:
    """No timeout parameters: one sync worker (``clients=1``) or a threaded one.

    Only the requests in flight when Redis broke, and one probe per
    cooldown, wait for it; every other request is a fast 503, and the log
    says what happened once, not per request.
    """
    manager = SessionManager(private_redis.url, app_id="defaults", policy="merge")
    pid = private_redis.pid
    assert pid is not None

    def break_it() -> None:
        if fault == "kill":
            private_redis.kill()
        else:
            os.kill(pid, signal.SIGSTOP)

    def heal() -> None:
        if fault == "kill":
            private_redis.start()
        else:
            os.kill(pid, signal.SIGCONT)

    with serve(manager, patience=PATIENCE, clients=clients) as stream:
        stream.wait_for(lambda: stream.requests("up", "200") >= 3 * clients, "no traffic")
        try:
            numbers = outage_with_the_defaults(stream, caplog, fault=break_it, heal=heal)
        finally:
            if fault == "stop":
                os.kill(pid, signal.SIGCONT)
    print(f"redis {fault}, {clients} client(s): {numbers}")


# -- Cluster failover ----------------------------------------------------------


def test_cluster_failover_sessions_saved_after_it_are_fine(redis_cluster: Any) -> None:
    """Kill the master of some sessions; its replica takes over; the app goes on.

    Sessions on other masters are served throughout; the ones on the dead
    master's slots get 503 until the failover, then are served by the
    promoted replica: kept if replication had copied them (on a quiet
    loopback it usually has), else their next request starts a new session.
    Sessions saved after the failover are read back exactly.
    """
    url = f"{redis_cluster.url}?{TIMEOUTS}"
    store = open_store(url)
    assert isinstance(store, RedisStore)
    manager = SessionManager(store, app_id=f"failover{os.getpid()}", policy="merge")
    clients = [Client(SessionMiddleware(counter_app, manager)) for _ in range(12)]
    try:
        for client in clients:
            assert client.get("/incr").text == "1"
        victim = clients[0]
        cookie = victim.get_cookie("shoal")
        assert cookie is not None
        record = store._key(RecordKey(manager.app_id, hash_id(cookie.value)))
        redis_cluster.kill_master_of(record)
        statuses = Counter(client.get("/incr").status_code for client in clients)
        assert set(statuses) <= {200, 503} and statuses[503] >= 1, statuses
        redis_cluster.wait_for_failover()

        # The same app, no restart: every client is served again.
        deadline = time.monotonic() + PATIENCE
        for client in clients:
            while (response := client.get("/incr")).status_code != 200:
                assert response.status_code == 503
                assert time.monotonic() < deadline, "the failover was never picked up"
                time.sleep(0.05)
        # Saved after the failover: read back exactly, request after request.
        for _ in range(3):
            values = [int(client.get("/incr").text) for client in clients]
            again = [int(client.get("/incr").text) for client in clients]
            assert again == [v + 1 for v in values]
    finally:
        manager.close()
        redis_cluster.heal()
