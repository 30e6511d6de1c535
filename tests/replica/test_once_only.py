"""Once-only values: flash messages read once, tokens consumed at most once cluster-wide."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import orjson
import pytest
from werkzeug.test import Client

from shoal import ManualClock, SessionManager, SessionStateError
from shoal.session import MAX_TOKENS_PER_NAME
from shoal.stores.base import Store
from shoal.wsgi import SessionMiddleware

from . import _workers
from ._apps import NEW_KEY, demo_app, dump, jar, load_jar

POLICIES = ["lossy", "merge", "optimistic", "serialized"]
UNLOCKED = ["lossy", "merge", "optimistic"]


def replica_manager(
    clock: ManualClock, app_id: str, store: str | Store = "memory://"
) -> SessionManager:
    return SessionManager(store, app_id=app_id, clock=clock, replica=True, secret_keys=[NEW_KEY])


# -- flash messages ---------------------------------------------------------------


def flashes(client: Client) -> list[str]:
    response = client.get("/flashes")
    assert response.status_code == 200
    result: list[str] = orjson.loads(response.data)
    return result


def test_flashes_are_read_once_in_order(clock: ManualClock, app_id: str) -> None:
    client = Client(SessionMiddleware(demo_app, replica_manager(clock, app_id)))
    client.get("/flash?saved")
    clock.advance(1)
    client.get("/flash?welcome")
    assert flashes(client) == ["saved", "welcome"]
    assert flashes(client) == []


def test_flashes_travel_in_the_replica(clock: ManualClock, app_id: str) -> None:
    manager = replica_manager(clock, app_id)
    client = Client(SessionMiddleware(demo_app, manager))
    client.get("/flash?hello")
    manager.store = type(manager.store)()  # the node restarted
    assert flashes(client) == ["hello"]


def test_flashes_by_category_and_from_concurrent_requests(store: Store, clock: ManualClock,
                                                          app_id: str) -> None:
    manager = SessionManager(store, app_id=app_id, clock=clock, policy="merge")
    with manager.open() as session:
        session["user"] = "ada"
    first = manager.begin(session.id, lazy=False)
    second = manager.begin(session.id, lazy=False)
    first.flash("from one", category="info")
    second.flash("from two", category="error")
    manager.commit(first)
    manager.commit(second)
    with manager.open(session.id) as again:
        assert [f.message for f in again.pop_flashes("error")] == ["from two"]
        assert [tuple(f) for f in again.pop_flashes()] == [("info", "from one")]
    with manager.open(session.id) as after:
        assert after.pop_flashes() == [] and after["user"] == "ada"


# -- tokens ------------------------------------------------------------------------------


def test_a_token_is_consumed_once_and_replays_are_refused(clock: ManualClock, app_id: str) -> None:
    manager = replica_manager(clock, app_id)
    client = Client(SessionMiddleware(demo_app, manager))
    token = client.get("/issue?buy").text
    before = jar(client)
    assert client.get(f"/consume?buy={token}").text == "yes"
    assert client.get(f"/consume?buy={token}").text == "no", "the same request again"
    load_jar(client, before)
    assert client.get(f"/consume?buy={token}").text == "no", "an old cookie and replica"
    assert client.get("/consume?buy=forged").text == "no"


def test_a_token_does_not_come_back_with_a_restored_replica(
    clock: ManualClock, app_id: str
) -> None:
    """Tokens never enter replicas: after a flush the store copy is gone, so is the token."""
    manager = replica_manager(clock, app_id)
    client = Client(SessionMiddleware(demo_app, manager))
    client.get("/set?cart=3")
    token = client.get("/issue?buy").text
    manager.store = type(manager.store)()
    assert client.get(f"/consume?buy={token}").text == "no"
    assert dump(client) == {"cart": "3"}


@pytest.mark.parametrize("policy", UNLOCKED)
def test_two_interleaved_consumers_one_wins(store: Store, clock: ManualClock, app_id: str,
                                            policy: str) -> None:
    manager = SessionManager(store, app_id=app_id, clock=clock, policy=policy)
    with manager.open() as session:
        session["user"] = "ada"
        token = session.issue_token("buy")
    first = manager.begin(session.id, lazy=False)
    second = manager.begin(session.id, lazy=False)
    assert first.consume_token("buy", token) is True
    assert second.consume_token("buy", token) is False, "decided by the store, not the copy"
    first["bought"] = True
    manager.commit(first)
    manager.commit(second)
    with manager.open(session.id) as after:
        assert after["bought"] is True and after["user"] == "ada"
        assert after.consume_token("buy", token) is False


def test_consume_in_a_serialized_request_keeps_the_fence(store: Store, clock: ManualClock,
                                                         app_id: str) -> None:
    manager = SessionManager(store, app_id=app_id, clock=clock, policy="serialized")
    with manager.open() as session:
        token = session.issue_token("buy")
    with manager.open(session.id) as locked:
        assert locked.consume_token("buy", token)
        locked["paid"] = 1  # saved under the same lease after the consume
    with manager.open(session.id) as after:
        assert after["paid"] == 1


def test_concurrent_processes_consume_a_token_at_most_once(tmp_path: Path, app_id: str) -> None:
    """Four processes race for the same token under every policy: exactly one wins each."""
    url = f"sqlite://{tmp_path / 'sessions.db'}"
    manager = SessionManager(url, app_id=app_id)
    with manager.open() as session:
        tokens = {policy: session.issue_token("buy") for policy in POLICIES}
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    outs = [str(tmp_path / f"out{i}.json") for i in range(4)]
    procs = [
        ctx.Process(target=_workers.consume_all, args=(url, app_id, session.id, tokens, start, out))
        for out in outs
    ]
    for proc in procs:
        proc.start()
    try:
        start.set()
        for proc in procs:
            proc.join(120)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    results = [json.loads(Path(out).read_text()) for out in outs]
    for policy in POLICIES:
        assert sum(result[policy] for result in results) == 1, policy
    manager.close()


def test_token_ttl_limit_and_names(store: Store, clock: ManualClock, app_id: str) -> None:
    manager = SessionManager(store, app_id=app_id, clock=clock)
    with manager.open() as session:
        short = session.issue_token("buy", ttl=60)
        first = session.issue_token("cart")
        for _ in range(MAX_TOKENS_PER_NAME):
            clock.advance(0.001)
            newest = session.issue_token("cart")
        with pytest.raises(ValueError, match="token name"):
            session.issue_token("a.b")
    clock.advance(61)
    with manager.open(session.id) as later:
        assert later.consume_token("buy", short) is False, "expired"
        assert later.consume_token("cart", first) is False, "the oldest was dropped"
        assert later.consume_token("cart", newest) is True
        assert later.consume_token("cart", None) is False
    with manager.open(session.id, read_only=True) as reader:
        with pytest.raises(SessionStateError):
            reader.consume_token("cart", newest)


def test_a_token_issued_and_consumed_in_one_request(store: Store, clock: ManualClock,
                                                    app_id: str) -> None:
    manager = SessionManager(store, app_id=app_id, clock=clock)
    with manager.open() as session:
        token = session.issue_token("buy")
        assert session.consume_token("buy", token) is True
        assert session.consume_token("buy", token) is False
