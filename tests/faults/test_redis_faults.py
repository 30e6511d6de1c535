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

import http.client
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from werkzeug.serving import make_server  # noqa: E402
from werkzeug.test import Client  # noqa: E402

from shoal import SessionManager  # noqa: E402
from shoal.ids import hash_id  # noqa: E402
from shoal.stores import open_store  # noqa: E402
from shoal.stores.base import RecordKey  # noqa: E402
from shoal.stores.redis import RedisStore  # noqa: E402
from shoal.wsgi import SessionMiddleware  # noqa: E402
from tests.servers import RedisServer  # noqa: E402
from tests.servers.availability import redis_unavailable, skip_or_fail  # noqa: E402

pytestmark = pytest.mark.slow

TIMEOUTS = "socket_timeout=1.5&socket_connect_timeout=1&pool_timeout=1"
HTTP_TIMEOUT = 60.0  # a request still running after this is a hang
PATIENCE = 90.0  # bound of every wait for the stream to reach a phase
CLIENTS = 4


def counter_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """/incr adds one to the session's counter and answers it."""
    session = environ["shoal.session"]
    session["n"] = count = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])  # commits the session
    return [str(count).encode()]


@dataclass
class Stream:
    """CLIENTS threads sending requests until stopped, each recording (phase, outcome)."""

    port: int
    phase: str = "up"
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(CLIENTS):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _client(self) -> None:
        cookie = ""
        for _ in range(100_000):  # bounded; ended by `stop` long before
            if self.stop.is_set():
                return
            phase = self.phase
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
                conn.request("GET", "/incr", headers={"Cookie": cookie} if cookie else {})
                response = conn.getresponse()
                response.read()
                conn.close()
                outcome = str(response.status)
                for header in response.headers.get_all("Set-Cookie") or []:
                    if header.startswith("shoal="):
                        cookie = header.split(";", 1)[0]
            except Exception as exc:  # a hang or a dead worker: the test fails on it
                outcome = f"client error {type(exc).__name__}: {exc}"
            with self.lock:
                self.outcomes.append((phase, outcome))
            if outcome != "200":
                time.sleep(0.05)  # a 503 comes back at once: don't spin

    def count(self, phase: str, outcome: str | None = None) -> int:
        with self.lock:
            return sum(
                1 for p, o in self.outcomes if p == phase and (outcome is None or o == outcome)
            )

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + PATIENCE
        while not predicate():
            assert time.monotonic() < deadline, f"{what}; outcomes: {self.summary()}"
            time.sleep(0.02)

    def summary(self) -> dict[tuple[str, str], int]:
        with self.lock:
            return dict(Counter(self.outcomes))

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(HTTP_TIMEOUT + 10)
            assert not thread.is_alive(), "a client thread hung"


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own: killing it disturbs no other test."""
    reason = redis_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    with RedisServer() as server:
        yield server


@pytest.fixture
def served(private_redis: RedisServer, request: pytest.FixtureRequest) -> Iterator[Stream]:
    """The middleware on a real threaded HTTP server, and a running request stream."""
    policy = getattr(request, "param", "merge")
    manager = SessionManager(f"{private_redis.url}?{TIMEOUTS}", app_id="faults", policy=policy)
    server = make_server("127.0.0.1", 0, SessionMiddleware(counter_app, manager), threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    stream = Stream(server.server_port)
    try:
        stream.start()
        stream.wait_for(lambda: stream.count("up", "200") >= 3 * CLIENTS, "no traffic")
        yield stream
    finally:
        stream.finish()
        server.shutdown()
        serving.join(HTTP_TIMEOUT)
        manager.close()


@pytest.mark.parametrize("served", ["merge", "serialized"], indirect=True)
def test_sigkill_gives_503_and_the_app_recovers_on_restart(
    served: Stream, private_redis: RedisServer
) -> None:
    stream = served
    private_redis.kill()
    stream.phase = "down"
    stream.wait_for(lambda: stream.count("down", "503") >= 3 * CLIENTS, "no 503 while down")
    stream.phase = "restarting"
    private_redis.start()  # same port, empty (persistence is off, as after a crash)
    stream.phase = "back"
    stream.wait_for(lambda: stream.count("back", "200") >= 3 * CLIENTS, "no recovery")
    stream.finish()
    outcomes = stream.summary()
    assert {o for (_, o) in outcomes} <= {"200", "503"}, outcomes
    # Started after the kill and before the restart: no store to answer.
    assert stream.count("down", "200") == 0, outcomes


def test_a_hung_server_gives_503_within_the_socket_timeout(
    served: Stream, private_redis: RedisServer
) -> None:
    stream = served
    pid = private_redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # our own child: accepts connections, answers nothing
    try:
        stream.phase = "hung"
        stream.wait_for(lambda: stream.count("hung", "503") >= 2 * CLIENTS, "no 503 while hung")
    finally:
        os.kill(pid, signal.SIGCONT)
    stream.phase = "back"
    stream.wait_for(lambda: stream.count("back", "200") >= 3 * CLIENTS, "no recovery")
    stream.finish()
    outcomes = stream.summary()
    # No client error: every request ended well inside HTTP_TIMEOUT.
    assert {o for (_, o) in outcomes} <= {"200", "503"}, outcomes


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
