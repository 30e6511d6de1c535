"""Restoring sessions from their replicas through the WSGI middleware, on real stores.

The store loses sessions (flushed, restarted, unreachable) between requests;
every session that had a replica must come back with its data, and nothing a
client can send may bring back what the store decided against.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from shoal import ConfigError, ManualClock, SessionManager
from shoal.stores import open_store
from shoal.stores.sqlite import SQLiteStore
from shoal.wsgi import SessionMiddleware
from tests.conftest import STORE_KINDS

from ._apps import (
    NEW_KEY,
    OLD_KEY,
    OTHER_KEY,
    demo_app,
    dump,
    jar,
    load_jar,
    replica_cookies,
    set_cookies,
)

POLICIES = ["lossy", "merge", "optimistic", "serialized"]


# -- stores that can lose everything between two requests ---------------------


def _restart_memory(manager: SessionManager, request: pytest.FixtureRequest | None = None) -> None:
    """A node that kept sessions in memory was restarted."""
    manager.store = open_store("memory://")


def _delete_sqlite_file(
    manager: SessionManager, request: pytest.FixtureRequest | None = None
) -> None:
    """The database file (and its WAL) deleted under the running store."""
    assert isinstance(manager.store, SQLiteStore)
    for suffix in ("", "-wal", "-shm"):
        Path(manager.store.path + suffix).unlink(missing_ok=True)


def _flushall(manager: SessionManager, request: pytest.FixtureRequest | None) -> None:
    """FLUSHALL on the private Redis server: a restart without persistence."""
    import redis

    assert request is not None
    server = request.getfixturevalue("redis_server")
    with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10) as client:
        client.flushall()


@dataclass(frozen=True)
class Flushable:
    url: Callable[[pytest.FixtureRequest, Path], str]
    flush: Callable[[SessionManager, pytest.FixtureRequest | None], None]


# A store kind joins the flush tests with one line here.
FLUSHABLE: dict[str, Flushable] = {
    "memory": Flushable(lambda request, tmp: "memory://", _restart_memory),
    "sqlite": Flushable(
        lambda request, tmp: f"sqlite://{tmp / 'sessions.db'}", _delete_sqlite_file
    ),
    "redis": Flushable(STORE_KINDS["redis"], _flushall),
}


@pytest.fixture(params=sorted(FLUSHABLE))
def flushable(request: pytest.FixtureRequest) -> Flushable:
    return FLUSHABLE[request.param]


def make_manager(
    store: str, clock: ManualClock, app_id: str, keys: list[str] | None = None, **kw: object
) -> SessionManager:
    return SessionManager(
        store, app_id=app_id, clock=clock, replica=True, secret_keys=keys or [NEW_KEY],
        idle_timeout=1800, touch_interval=60, **kw,  # type: ignore[arg-type]
    )


def client_of(manager: SessionManager) -> Client:
    return Client(SessionMiddleware(demo_app, manager))


# -- restore after a flush -----------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_every_session_comes_back_after_a_flush(
    flushable: Flushable, policy: str, request: pytest.FixtureRequest, tmp_path: Path,
    clock: ManualClock, app_id: str,
) -> None:
    manager = make_manager(flushable.url(request, tmp_path), clock, app_id, policy=policy)
    clients = [client_of(manager) for _ in range(5)]
    for number, client in enumerate(clients):
        assert client.get(f"/set?user=u{number}&cart={number * 3}").status_code == 200
    clock.advance(10)
    flushable.flush(manager, request)
    assert not list(manager.store.records(app_id)), "the store really lost everything"
    for number, client in enumerate(clients):
        assert dump(client) == {"user": f"u{number}", "cart": str(number * 3)}
    stats = manager.replica_stats
    assert stats is not None and stats.restored == 5
    assert len(list(manager.store.records(app_id))) == 5, "written back to the store"
    # Writes after the restore go to the store and into the next replica.
    clients[0].get("/set?cart=99")
    flushable.flush(manager, request)
    assert dump(clients[0]) == {"user": "u0", "cart": "99"}
    manager.close()


def test_a_restored_session_keeps_its_id_and_its_cookie(tmp_path: Path, clock: ManualClock,
                                                         app_id: str) -> None:
    manager = make_manager("memory://", clock, app_id)
    client = client_of(manager)
    client.get("/set?a=1")
    before = jar(client)
    _restart_memory(manager)
    response = client.get("/get?a")
    assert response.text == "1"
    assert not any(h.startswith("shoal=") for h in set_cookies(response)), "same id, no new one"
    assert jar(client)["shoal"] == before["shoal"]


def test_per_key_expiry_survives_a_restore(clock: ManualClock, app_id: str) -> None:
    manager = make_manager("memory://", clock, app_id)
    client = client_of(manager)
    client.get("/ttl?auth=ada")
    client.get("/set?cart=3")
    _restart_memory(manager)
    clock.advance(600)
    assert dump(client) == {"auth": "ada", "cart": "3"}
    _restart_memory(manager)
    clock.advance(301)
    assert dump(client) == {"cart": "3"}, "auth expired after 900 s; the session lives on"


# -- the store cannot be reached --------------------------------------------------


def _break(directory: Path) -> None:
    shutil.rmtree(directory)
    directory.write_text("not a directory")


def _mend(directory: Path) -> None:
    os.remove(directory)
    directory.mkdir()


def test_unreachable_store_serves_from_the_replica_then_writes_it_back(
    tmp_path: Path, clock: ManualClock, app_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "db"
    base.mkdir()
    manager = make_manager(f"sqlite://{base / 's.db'}", clock, app_id)
    client = client_of(manager)
    client.get("/set?a=1")
    without_replica = client_of(manager)
    without_replica.get("/set?x=1")
    load_jar(without_replica, {"shoal": jar(without_replica)["shoal"]})
    _break(base)
    with caplog.at_level(logging.WARNING, logger="shoal"):
        assert client.get("/get?a").text == "1", "served from the replica, not a 503"
        assert client.get("/set?b=2").status_code == 200
        newcomer = client_of(manager)
        assert newcomer.get("/set?n=1").status_code == 200, "a new session lives in its replica"
        assert without_replica.get("/get?x").status_code == 503, "no replica: the store decides"
    assert any("from its replica" in r.getMessage() for r in caplog.records)
    assert dump(client) == {"a": "1", "b": "2"}
    _mend(base)
    assert dump(client) == {"a": "1", "b": "2"}
    assert dump(newcomer) == {"n": "1"}
    stats = manager.replica_stats
    assert stats is not None and stats.served >= 3 and stats.restored == 2
    assert len(list(manager.store.records(app_id))) == 2


def test_writes_made_during_an_outage_win_over_the_stale_store_copy(
    tmp_path: Path, clock: ManualClock, app_id: str
) -> None:
    """The store comes back with the record it had: the replica's newer generation wins."""
    base, aside = tmp_path / "db", tmp_path / "aside"
    base.mkdir()
    manager = make_manager(f"sqlite://{base / 's.db'}", clock, app_id)
    client = client_of(manager)
    client.get("/set?a=1&b=1")
    manager.store.close()
    base.rename(aside)
    base.write_text("not a directory")
    client.get("/set?b=2&c=3")
    os.remove(base)
    aside.rename(base)
    assert dump(client) == {"a": "1", "b": "2", "c": "3"}
    other = client_of(manager)
    load_jar(other, {"shoal": jar(client)["shoal"]})
    assert dump(other) == {"a": "1", "b": "2", "c": "3"}, "the store itself holds it now"


def test_a_logout_during_an_outage_fails_loudly(tmp_path: Path, clock: ManualClock,
                                                app_id: str) -> None:
    base = tmp_path / "db"
    base.mkdir()
    manager = make_manager(f"sqlite://{base / 's.db'}", clock, app_id)
    client = client_of(manager)
    client.get("/set?a=1")
    _break(base)
    assert client.get("/logout").status_code == 503, "a logout that cannot reach the store"
    _mend(base)
    assert client.get("/logout").status_code == 200
    assert client.get("/get?a").text == "-"


# -- what the store decided stands ---------------------------------------------------


def test_an_older_replica_never_wins_over_the_store(clock: ManualClock, app_id: str) -> None:
    manager = make_manager("memory://", clock, app_id)
    client = client_of(manager)
    client.get("/set?a=1")
    old = jar(client)
    client.get("/set?a=2")
    load_jar(client, old)
    assert client.get("/get?a").text == "2", "a downgraded replica is ignored"
    assert manager.replica_stats is not None and manager.replica_stats.restored == 0


@pytest.mark.parametrize("flush_after", [False, True], ids=["store-kept", "store-flushed-later"])
def test_invalidate_then_replay_does_not_resurrect(
    clock: ManualClock, app_id: str, tmp_path: Path, flush_after: bool
) -> None:
    manager = make_manager(f"sqlite://{tmp_path / 's.db'}", clock, app_id)
    client = client_of(manager)
    client.get("/set?a=1")
    stolen = jar(client)
    logout = client.get("/logout")
    cleared = replica_cookies(logout)
    assert cleared == {"shoal_r0": ""}, "the replica cookie is cleared too"
    replay = client_of(manager)
    load_jar(replay, stolen)
    clock.advance(5)
    response = replay.get("/get?a")
    assert response.text == "-" and response.status_code == 200
    assert manager.replica_stats is not None and manager.replica_stats.restored == 0
    if flush_after:
        # The tombstone is gone with the file: documented limit (docs/replica.md).
        _delete_sqlite_file(manager)
        load_jar(replay, stolen)
        assert replay.get("/get?a").text == "1"


def _corrupt(cookies: dict[str, str], case: str, helpers: dict[str, dict[str, str]]) -> None:
    r0 = cookies["shoal_r0"]
    if case == "tampered":
        middle = len(r0) // 2
        cookies["shoal_r0"] = r0[:middle] + ("A" if r0[middle] != "A" else "B") + r0[middle + 1 :]
    elif case == "truncated":
        cookies["shoal_r0"] = r0[:-10]
    elif case == "reordered":
        cookies["shoal_r1"], cookies["shoal_r2"] = cookies["shoal_r2"], cookies["shoal_r1"]
    elif case == "missing-chunk":
        del cookies["shoal_r1"]
    elif case in ("foreign-key", "other-app", "other-session"):
        for name in [n for n in cookies if n.startswith("shoal_r")]:
            del cookies[name]
        cookies.update({k: v for k, v in helpers[case].items() if k != "shoal"})
    elif case == "garbage":
        cookies["shoal_r0"] = "1.x.%%%<script>"
    elif case == "no-gen":
        cookies["shoal_r0"] = r0.replace(".", "!", 3)


BAD_REPLICAS = ["tampered", "truncated", "reordered", "missing-chunk", "foreign-key",
                "other-app", "other-session", "garbage", "no-gen", "expired"]


@pytest.mark.parametrize("case", BAD_REPLICAS)
def test_bad_replicas_give_a_fresh_session_never_a_500(
    case: str, clock: ManualClock, app_id: str
) -> None:
    manager = make_manager("memory://", clock, app_id, replica_max_bytes=16384)
    client = client_of(manager)
    # Incompressible data, so the replica spans three cookies.
    assert client.get("/big?blob=6000").status_code == 200
    client.get("/set?a=1")
    cookies = jar(client)
    assert {"shoal_r0", "shoal_r1", "shoal_r2"} <= set(cookies)

    def replica_from(other: SessionManager) -> dict[str, str]:
        stranger = client_of(other)
        stranger.get("/big?blob=6000")
        return jar(stranger)

    helpers = {
        "foreign-key": replica_from(
            make_manager("memory://", clock, app_id, keys=[OTHER_KEY], replica_max_bytes=16384)
        ),
        "other-app": replica_from(
            make_manager("memory://", clock, app_id + "x", replica_max_bytes=16384)
        ),
        "other-session": replica_from(manager),
    }
    _corrupt(cookies, case, helpers)
    if case == "expired":
        clock.advance(1801)
    _restart_memory(manager)
    load_jar(client, cookies)
    response = client.get("/get?a")
    assert response.status_code == 200 and response.text == "-"
    assert any(h.startswith("shoal=;") for h in set_cookies(response)), "stale id cleared"
    assert set(replica_cookies(response).values()) == {""}, "stale replica cookies cleared"
    stats = manager.replica_stats
    assert stats is not None and stats.restored == 0
    assert stats.rejected + stats.expired <= 1, "rejected at most once, before any crypto"


# -- keys, sizes, configuration ----------------------------------------------------------


def test_rotating_keys_logs_no_one_out(clock: ManualClock, app_id: str) -> None:
    manager = make_manager("memory://", clock, app_id, keys=[OLD_KEY])
    client = Client(SessionMiddleware(demo_app, manager))
    client.get("/set?a=1")
    rotated = make_manager("memory://", clock, app_id, keys=[NEW_KEY, OLD_KEY])
    client.application = SessionMiddleware(demo_app, rotated)
    assert client.get("/get?a").text == "1", "the old key still opens"
    new_only = make_manager("memory://", clock, app_id, keys=[NEW_KEY])
    client.application = SessionMiddleware(demo_app, new_only)
    assert client.get("/get?a").text == "1", "the restore re-sealed it with the newest key"


def test_large_sessions_are_chunked_and_shrink_cleanly(clock: ManualClock, app_id: str) -> None:
    manager = make_manager("memory://", clock, app_id, replica_max_bytes=16384)
    client = client_of(manager)
    big = client.get("/big?blob=7000")
    chunks = replica_cookies(big)
    assert sorted(chunks) == ["shoal_r0", "shoal_r1", "shoal_r2"]
    assert all(len(h) <= 3900 for h in set_cookies(big))
    _restart_memory(manager)
    blob = client.get("/get?blob").text
    assert len(blob) > 9000
    small = client.get("/set?blob=small")
    assert replica_cookies(small)["shoal_r1"] == "" and replica_cookies(small)["shoal_r2"] == ""
    assert set(jar(client)) == {"shoal", "shoal_r0"}
    _restart_memory(manager)
    assert client.get("/get?blob").text == "small"


def test_a_replica_over_the_cap_is_skipped_and_the_old_one_cleared(
    clock: ManualClock, app_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager("memory://", clock, app_id, replica_max_bytes=4000)
    client = client_of(manager)
    client.get("/set?a=1")
    assert "shoal_r0" in jar(client)
    with caplog.at_level(logging.WARNING, logger="shoal"):
        response = client.get("/big?blob=6000")
    assert response.status_code == 200
    assert replica_cookies(response) == {"shoal_r0": ""}
    assert any("replica_max_bytes=4000" in r.getMessage() for r in caplog.records)
    assert manager.replica_stats is not None and manager.replica_stats.skipped_too_large == 1
    assert client.get("/get?a").text == "1", "the store still has it"


def test_replicas_need_secret_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="secret_keys.*SHOAL_SECRET_KEYS"):
        SessionManager("memory://", replica=True)
    with pytest.raises(ConfigError, match="use False, True or 'only'"):
        SessionManager("memory://", replica="yes", secret_keys=[NEW_KEY])  # type: ignore[arg-type]
    manager = SessionManager("memory://", replica=True, secret_keys=[NEW_KEY, OLD_KEY])
    assert NEW_KEY not in repr(manager) and "replica=True" in repr(manager)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                       blacklist_characters=';,"\\'), max_size=300),
        min_size=1, max_size=3,
    ),
)
def test_arbitrary_replica_cookies_never_500(chunks: list[str], clock: ManualClock,
                                             app_id: str) -> None:
    manager = make_manager("memory://", clock, app_id)
    client = client_of(manager)
    client.get("/set?a=1")
    sid = jar(client)["shoal"]
    real = jar(client)["shoal_r0"]
    _restart_memory(manager)
    forged = "; ".join(f"shoal_r{i}={value}" for i, value in enumerate(chunks))
    raw = Client(SessionMiddleware(demo_app, manager), use_cookies=False)
    response = raw.get("/get?a", headers={"Cookie": f"shoal={sid}; {forged}"})
    assert response.status_code == 200 and response.text in ("-", "1")
    assert (response.text == "1") == (chunks[0] == real)
