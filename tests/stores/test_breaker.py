"""The circuit breaker (stores/_breaker.py) around real stores made unreachable.

A store on a port nobody listens on fails with "connection refused"; a
private PostgreSQL is killed and restarted for the probe. Breaker time is a
manual clock, so nothing here sleeps to let a cooldown pass.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shoal import ManualClock
from shoal.errors import ConfigError, StoreUnavailable
from shoal.stores import open_store
from shoal.stores._breaker import (
    BreakerSettings,
    BreakerState,
    BreakerStore,
    CircuitBreaker,
    breaker_for,
    split_breaker_options,
)
from shoal.stores.base import LoadStatus, RecordKey, Store
from shoal.stores.memory import MemoryStore
from tests.servers import PostgresServer, free_port
from tests.servers.availability import postgres_unavailable, skip_or_fail

pytest.importorskip("psycopg", reason="the postgres extra is not installed")
pytest.importorskip("pymysql", reason="the mysql extra is not installed")

KEY = RecordKey("app", "b" * 64)
NOW = 1_700_000_000.0


def closed_port_url(kind: str) -> str:
    port = free_port()
    if kind == "postgresql":
        return f"postgresql://postgres@127.0.0.1:{port}/postgres?pool_timeout=0.5&connect_timeout=2"
    return f"mysql://root@127.0.0.1:{port}/test?connect_timeout=2"


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The state now (a call, so a type checker does not carry an earlier one over)."""
    return breaker.state


@pytest.fixture(params=["postgresql", "mysql"])
def unreachable(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A real store whose server is not there: every call is StoreUnavailable."""
    store = open_store(closed_port_url(request.param) + "&breaker=off")
    yield store
    store.close()


def guarded(store: Store, clock: ManualClock, **settings: float) -> BreakerStore:
    values = {"threshold": 3, "window": 60.0, "cooldown": 10.0, **settings}
    return BreakerStore(
        store,
        CircuitBreaker(
            BreakerSettings(
                threshold=int(values["threshold"]),
                window=values["window"],
                cooldown=values["cooldown"],
            ),
            clock=clock,
        ),
    )


def failure_detail(store: Store) -> str:
    with pytest.raises(StoreUnavailable) as info:
        store.load(KEY, now=NOW)
    return info.value.detail


def test_opens_after_threshold_failures_then_fails_fast(unreachable: Store) -> None:
    clock = ManualClock(0.0)
    store = guarded(unreachable, clock)
    for _ in range(3):
        detail = failure_detail(store)
        assert "circuit open" not in detail
        assert "refused" in detail.lower(), detail  # the cause is named
    assert state_of(store.breaker) is BreakerState.OPEN
    refused = failure_detail(store)
    assert refused.startswith("circuit open after 3 consecutive failures"), refused
    assert "refused" in refused.lower(), "the refusal repeats the last real error"


def test_failures_spread_beyond_the_window_do_not_open(unreachable: Store) -> None:
    clock = ManualClock(0.0)
    store = guarded(unreachable, clock, window=5.0)
    failure_detail(store)
    failure_detail(store)
    clock.advance(6.0)  # the streak is older than the window: it starts over
    failure_detail(store)
    failure_detail(store)
    assert state_of(store.breaker) is BreakerState.CLOSED
    failure_detail(store)
    assert state_of(store.breaker) is BreakerState.OPEN


def test_failed_probe_opens_again_for_a_cooldown(unreachable: Store) -> None:
    clock = ManualClock(0.0)
    store = guarded(unreachable, clock, threshold=1)
    failure_detail(store)
    assert "circuit open" in failure_detail(store)
    clock.advance(10.0)
    probe = failure_detail(store)
    assert "circuit open" not in probe, "after the cooldown one call reaches the store"
    assert state_of(store.breaker) is BreakerState.OPEN
    assert "next probe in 10.0s" in failure_detail(store)


def test_only_one_probe_at_a_time(unreachable: Store) -> None:
    clock = ManualClock(0.0)
    store = guarded(unreachable, clock, threshold=1)
    failure_detail(store)
    clock.advance(10.0)
    details: list[str] = []
    barrier = threading.Barrier(6)

    def call() -> None:
        barrier.wait(timeout=30)
        details.append(failure_detail(store))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(details) == 6
    reached = [d for d in details if not d.startswith("circuit open")]
    assert len(reached) == 1, details


def test_answers_that_are_not_outages_count_as_success() -> None:
    clock = ManualClock(0.0)
    store = guarded(MemoryStore(), clock, threshold=1)
    assert store.load(KEY, now=NOW).status is LoadStatus.ABSENT
    assert state_of(store.breaker) is BreakerState.CLOSED
    with pytest.raises(TypeError):
        store.load(KEY)  # type: ignore[call-arg]  # a caller's bug is not an outage
    assert state_of(store.breaker) is BreakerState.CLOSED


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own: it gets killed."""
    reason = postgres_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    with PostgresServer() as server:
        yield server


def test_probe_closes_the_breaker_once_the_killed_server_is_back(
    own_postgres: PostgresServer,
) -> None:
    clock = ManualClock(0.0)
    url = f"{own_postgres.url}?table=t_{uuid.uuid4().hex[:8]}&pool_timeout=1&breaker=off"
    store = guarded(open_store(url), clock, threshold=2)
    try:
        assert store.load(KEY, now=NOW).status is LoadStatus.ABSENT
        own_postgres.kill()
        failure_detail(store)
        failure_detail(store)
        assert state_of(store.breaker) is BreakerState.OPEN
        assert "circuit open" in failure_detail(store)

        own_postgres.restart()
        assert "circuit open" in failure_detail(store), "still cooling down"
        clock.advance(10.0)
        # The probe may find the pool still reconnecting; the breaker then
        # waits another cooldown. Bounded: the pool reconnects within seconds.
        for _ in range(30):
            try:
                status = store.load(KEY, now=NOW).status
            except StoreUnavailable:
                clock.advance(10.0)
                continue
            break
        assert status is LoadStatus.ABSENT
        assert state_of(store.breaker) is BreakerState.CLOSED
        assert store.load(KEY, now=NOW).status is LoadStatus.ABSENT
    finally:
        store.close()


def test_open_store_shares_one_breaker_per_url() -> None:
    table = f"shared_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?table={table}"
    one, two = open_store(url), open_store(url)
    other = open_store(url + "x")
    try:
        assert isinstance(one, BreakerStore) and isinstance(two, BreakerStore)
        assert isinstance(other, BreakerStore)
        assert one.breaker is two.breaker is breaker_for(url)
        assert other.breaker is not one.breaker
    finally:
        for store in (one, two, other):
            store.close()


def test_breaker_options_come_off_the_url() -> None:
    url = "postgresql://u:secret@h/db?table=t&breaker_threshold=2&breaker_cooldown=1.5"
    store_url, settings = split_breaker_options(url)
    assert store_url == "postgresql://u:secret@h/db?table=t"
    assert settings == BreakerSettings(threshold=2, cooldown=1.5)
    assert split_breaker_options("mysql://h/db?breaker=off")[1] is None
    assert type(open_store("mysql://h/db?breaker=no")) is not BreakerStore
    assert type(open_store("memory://")) is not BreakerStore, "local stores are not wrapped"


@pytest.mark.parametrize(
    "query",
    [
        "breaker=maybe", "breaker_threshold=0", "breaker_cooldown=-1", "breaker_window=x",
        # An infinite cooldown never probes: open for the life of the process.
        # NaN compares false with everything: no cooldown, no window, never slow.
        "breaker_cooldown=inf", "breaker_cooldown=nan", "breaker_window=nan",
        "breaker_slow=nan",
    ],
)
def test_bad_breaker_options_are_config_errors(query: str) -> None:
    with pytest.raises(ConfigError):
        open_store(f"postgresql://h/db?{query}")


def test_a_probe_timeout_must_be_finite() -> None:
    # A probe whose thread died would hold the half-open breaker forever.
    with pytest.raises(ConfigError, match="probe_timeout"):
        BreakerSettings(probe_timeout=float("inf"))
    assert BreakerSettings(slow=float("inf")).slow == float("inf"), "slow=inf: count only"


# -- slow failures and the defaults ------------------------------------------------
#
# A store whose calls take time on the breaker's own clock: each failing call
# moves a ManualClock forward by ``delay`` before it raises, as a connect or
# socket timeout would, so nothing here sleeps.


class TimedStore(MemoryStore):
    """A MemoryStore that fails every call while ``down``, after ``delay`` clock seconds."""

    def __init__(self, clock: ManualClock, delay: float = 0.0) -> None:
        super().__init__()
        self.clock = clock
        self.delay = delay
        self.down = False

    def _step(self, key: RecordKey, step: Any, *, notify: bool = False) -> Any:
        if self.down:
            self.clock.advance(self.delay)
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError as exc:
                raise StoreUnavailable(self.url, f"timed out: {exc}") from exc
        return super()._step(key, step, notify=notify)


def default_breaker(store: Store, clock: ManualClock) -> BreakerStore:
    """``store`` behind a breaker with the default settings, on ``clock``."""
    return BreakerStore(store, CircuitBreaker(BreakerSettings(), clock=clock))


@pytest.mark.parametrize("delay", [1.0, 2.0, 3.0, 5.0, 10.0])
def test_one_slow_failure_opens_it_with_the_defaults(delay: float) -> None:
    """A failure that took a timeout's time is an outage: the next call must not wait too."""
    clock = ManualClock(0.0)
    inner = TimedStore(clock, delay)
    store = default_breaker(inner, clock)
    inner.down = True
    failure_detail(store)
    assert state_of(store.breaker) is BreakerState.OPEN
    before = clock()
    assert failure_detail(store).startswith("circuit open after 1 consecutive failure")
    assert clock() == before, "a refused call does not reach the store"


def test_a_slow_success_is_not_a_failure() -> None:
    clock = ManualClock(0.0)
    store = default_breaker(MemoryStore(), clock)

    class Slow(MemoryStore):
        def _step(self, key: RecordKey, step: Any, *, notify: bool = False) -> Any:
            clock.advance(30.0)  # a busy store that still answers
            return super()._step(key, step, notify=notify)

    store = default_breaker(Slow(), clock)
    for _ in range(10):
        assert store.load(KEY, now=NOW).status is LoadStatus.ABSENT
    assert state_of(store.breaker) is BreakerState.CLOSED


@pytest.mark.parametrize("pace", [0.5, 2.6, 5.0, 9.0])
def test_fast_failures_at_one_workers_pace_open_it(pace: float) -> None:
    """A sync worker fails one request every ``pace`` s: the streak is not forgotten."""
    clock = ManualClock(0.0)
    inner = TimedStore(clock, 0.01)  # refused at once
    store = default_breaker(inner, clock)
    inner.down = True
    for _ in range(5):
        failure_detail(store)
        if state_of(store.breaker) is BreakerState.OPEN:
            break
        clock.advance(pace)
    assert state_of(store.breaker) is BreakerState.OPEN


def test_a_quiet_gap_longer_than_the_window_starts_a_new_streak() -> None:
    clock = ManualClock(0.0)
    inner = TimedStore(clock, 0.01)
    store = default_breaker(inner, clock)
    threshold = store.breaker.settings.threshold
    assert threshold > 1
    inner.down = True
    for _ in range(threshold - 1):
        failure_detail(store)
    clock.advance(store.breaker.settings.window + 1)
    failure_detail(store)
    assert state_of(store.breaker) is BreakerState.CLOSED
    assert store.breaker.failures == 1


def test_a_success_ends_the_streak() -> None:
    clock = ManualClock(0.0)
    inner = TimedStore(clock, 0.01)
    store = default_breaker(inner, clock)
    for _ in range(3 * store.breaker.settings.threshold):
        inner.down = True
        failure_detail(store)
        inner.down = False
        assert store.load(KEY, now=NOW).status is LoadStatus.ABSENT
    assert state_of(store.breaker) is BreakerState.CLOSED


def test_recovers_by_itself_after_the_cooldown() -> None:
    clock = ManualClock(0.0)
    inner = TimedStore(clock, 2.0)
    store = default_breaker(inner, clock)
    inner.down = True
    failure_detail(store)
    inner.down = False
    assert "circuit open" in failure_detail(store)
    clock.advance(store.breaker.settings.cooldown)
    assert store.load(KEY, now=NOW).status is LoadStatus.ABSENT
    assert state_of(store.breaker) is BreakerState.CLOSED


def test_the_slow_bound_comes_off_the_url() -> None:
    store_url, settings = split_breaker_options("redis://h/0?breaker_slow=0.25&prefix=x")
    assert store_url == "redis://h/0?prefix=x"
    assert settings == BreakerSettings(slow=0.25)
    with pytest.raises(ConfigError):
        split_breaker_options("redis://h/0?breaker_slow=-1")
