"""Round trips per HTTP request on Redis: 1 to load, 1 to save, 1 for an unchanged session.

Counted twice, independently: on the client, by a redis-py connection that
counts every write to its socket (a pipeline is one write, one round trip),
and on the server, by ``INFO commandstats``: EVALSHA calls, and HGETALL
calls, since a load that takes no lease is a plain HGETALL. Commands run
inside a script are counted there too: the LOAD script (a load with a lease,
or a due touch) runs one HGETALL inside, so a request's server count is
EVALSHA + HGETALL - LOAD scripts, with the LOAD scripts each case runs
stated in the test.
Requests go through the WSGI middleware, as in production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

import redis  # noqa: E402
from werkzeug.test import Client  # noqa: E402

from shoal import ManualClock, SessionManager  # noqa: E402
from shoal.stores import open_store  # noqa: E402
from shoal.stores.redis import RedisStore  # noqa: E402
from shoal.wsgi import SessionMiddleware  # noqa: E402
from tests.conftest import STORE_KINDS  # noqa: E402


class CountingConnection(redis.Connection):
    """A connection that counts the packets it sends: one per round trip."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = environ["shoal.session"]
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    body = b""
    if path == "/set":
        name, _, value = query.partition("=")
        session[name] = value
    elif path == "/get":
        body = str(session.get(query, "-")).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[RedisStore]:
    opened = open_store(STORE_KINDS["redis"](request, tmp_path))
    assert isinstance(opened, RedisStore)
    client: Any = opened._conn()[0]
    client.connection_pool.connection_class = CountingConnection  # before any connection
    yield opened
    opened.close()


@pytest.fixture
def evalsha_calls(redis_server: Any) -> Callable[[], int]:
    """EVALSHA + HGETALL calls the server ran (a script's own HGETALL included)."""

    def calls() -> int:
        with redis.Redis(port=redis_server.port) as server:
            stats = server.info("commandstats")
        return sum(
            int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "hgetall")
        )

    return calls


class Counter:
    """Round trips of each request, on the client and on the server."""

    def __init__(self, client: Client, evalsha_calls: Callable[[], int]) -> None:
        self.client = client
        self.evalsha_calls = evalsha_calls

    def __call__(self, path: str, *, load_scripts: int = 0) -> tuple[int, int]:
        """(writes to the socket, server commands) of one request that ran
        ``load_scripts`` LOAD scripts (each also counted by its inner HGETALL)."""
        sent, evalsha = CountingConnection.sent, self.evalsha_calls()
        response = self.client.get(path)
        assert response.status_code == 200, response.text
        return CountingConnection.sent - sent, self.evalsha_calls() - evalsha - load_scripts


@pytest.mark.parametrize("policy", ["lossy", "merge", "optimistic", "serialized"])
def test_round_trips_per_request(
    store: RedisStore,
    evalsha_calls: Callable[[], int],
    clock: ManualClock,
    app_id: str,
    policy: str,
) -> None:
    manager = SessionManager(store, app_id=app_id, policy=policy, clock=clock, touch_interval=60)
    count = Counter(Client(SessionMiddleware(app, manager)), evalsha_calls)
    count("/set?warm=up")  # connect and load the scripts once: not a request's cost
    count("/set?warm=again")
    count("/get?warm")
    clock.advance(61)
    count("/get?warm")  # a due touch: loads the LOAD script on a non-locking policy
    count("/get?warm")

    locks = int(policy == "serialized")  # a load with a lease is the LOAD script
    assert count("/none") == (0, 0), "a request that never touches the session: no I/O"
    assert count("/set?a=1", load_scripts=locks) == (2, 2), (
        "changed: 1 load (+lock) and 1 save (+unlock)"
    )
    unchanged = 2 if policy == "serialized" else 1  # serialized must give the lease back
    assert count("/get?a", load_scripts=locks) == (unchanged, unchanged), (
        "unchanged and not due a touch"
    )
    clock.advance(61)
    # A due touch (once per touch interval): under serialized it rides on the
    # load-and-lock script; otherwise the plain HGETALL load finds it due and
    # the LOAD script then touches, re-checking atomically: one more round
    # trip, once a minute (docs/decisions.md, "Redis: a load is HGETALL").
    touched = unchanged + 1 - locks
    assert count("/get?a", load_scripts=1) == (touched, touched), "a due touch"
    assert count("/get?a", load_scripts=locks) == (unchanged, unchanged), "touched: not due"
    assert count("/set?b=2", load_scripts=locks) == (2, 2)


def test_a_new_session_costs_one_round_trip(
    store: RedisStore, evalsha_calls: Callable[[], int], clock: ManualClock, app_id: str
) -> None:
    manager = SessionManager(store, app_id=app_id, clock=clock)
    count = Counter(Client(SessionMiddleware(app, manager)), evalsha_calls)
    count("/set?warm=up")
    fresh = Counter(Client(SessionMiddleware(app, manager)), evalsha_calls)  # no cookie yet
    assert fresh("/set?a=1") == (1, 1), "nothing to load: one create"
