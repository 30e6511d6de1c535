"""Expiry races: a request against a cleanup pass, in every interleaving, on every store.

The mod_python cleanup discussion: a request loads an old session, a cleanup
pass sees it as expired and deletes it after the request saved it, and a
valid session is lost. Here the request has three steps and the cleanup two:

- ``L`` load: ``manager.begin(id, lazy=False)`` (touches the record when due);
- ``P`` process: read and change a value (no store I/O);
- ``S`` save: ``manager.commit(session)``;
- ``C`` check: the cleanup decides which records are expired past ``grace``
  from a listing (``store.records``), as a cron job would;
- ``D`` delete: ``store.purge``, whose delete re-checks the expiry
  atomically (one transaction / script), so what ``C`` decided may be stale.

Each side keeps its own order, so there are C(5, 2) = 10 interleavings. The
harness runs the steps one at a time in that order, which is the same as
pausing each side at the named points: every step is one atomic store call
(or none), so no other interleaving of store operations exists. Time is a
``ManualClock`` that moves ``step`` seconds between steps; the cleanup runs on
a node whose clock is ``skew`` seconds ahead of the request's.

After every step the harness checks the three rules:

1. a session saved (or touched) within ``idle_timeout + grace`` of the
   cleanup's clock is never deleted;
2. a session expired at the load is never loaded (the request gets a new id);
3. a save never re-creates or extends a session that was purged or expired.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal import ManualClock, SessionManager
from shoal.ids import hash_id
from shoal.stores.base import (
    ApplyStatus,
    Change,
    LoadStatus,
    NewRecord,
    RecordInfo,
    RecordKey,
    Store,
    Touch,
)

from .conftest import ManagerFactory

IDLE = 100.0
TOUCH = 50.0  # the largest allowed: idle_timeout / 2
GRACE = 30.0


def interleavings(request: str = "LPS", cleanup: str = "CD") -> list[str]:
    """Every merge of the two step sequences that keeps each one's order."""
    total = len(request) + len(cleanup)
    orders = []
    for slots in itertools.combinations(range(total), len(cleanup)):
        req, cln = iter(request), iter(cleanup)
        orders.append("".join(next(cln) if i in slots else next(req) for i in range(total)))
    return orders


ORDERS = interleavings()


def test_there_are_ten_interleavings() -> None:
    assert len(ORDERS) == len(set(ORDERS)) == 10
    assert all(o.index("L") < o.index("P") < o.index("S") for o in ORDERS)
    assert all(o.index("C") < o.index("D") for o in ORDERS)


@dataclass(frozen=True)
class Scenario:
    """Timing of one race: the session was last saved at ``T0``.

    ``age``: the request clock at the first step, minus ``T0``.
    ``step``: seconds between two consecutive steps.
    ``skew``: the cleanup node's clock minus the request node's.
    """

    age: float
    step: float
    skew: float = 0.0


SCENARIOS = {
    # Loaded just before it expires: the load's touch keeps it alive.
    "alive-near-expiry": Scenario(age=95, step=2),
    # Same, with the cleanup's clock ahead by less than the grace period.
    "alive-cleanup-clock-ahead": Scenario(age=95, step=2, skew=25),
    # Loaded without a touch (not due yet) by a slow request: depending on the
    # order, the session expires before the save, which must then drop it.
    "expires-during-request": Scenario(age=45, step=20),
    # Expired before the load, but within the grace period: not purged yet.
    "expired-in-grace": Scenario(age=105, step=2),
    # Expired past the grace period: purged by D.
    "expired-past-grace": Scenario(age=135, step=2),
}


def _info(store: Store, key: RecordKey) -> RecordInfo | None:
    return next((i for i in store.records(key.app_id) if i.key == key), None)


class Race:
    """One request and one cleanup pass over one session, stepped by hand."""

    def __init__(
        self, manager: SessionManager, clock: ManualClock, scenario: Scenario, *, naive: bool
    ) -> None:
        self.manager, self.store, self.clock = manager, manager.store, clock
        self.scenario = scenario
        self.naive = naive  # the cleanup deletes what C decided, without re-checking
        with manager.open() as session:
            session["n"] = 0
        self.sid = session.id
        self.key = RecordKey(manager.app_id, hash_id(self.sid))
        self.last_write = clock()  # request-clock time of the last save or touch
        self.candidates: list[RecordKey] = []
        self.loaded_new: bool | None = None
        self.saved = False
        self.lost = False  # a record that was live (by the store's rule) disappeared
        clock.advance(scenario.age)

    def cleanup_now(self) -> float:
        return self.clock() + self.scenario.skew

    def run(self, order: str) -> None:
        for index, step in enumerate(order):
            if index:
                self.clock.advance(self.scenario.step)
            getattr(self, step)()

    # -- the request ------------------------------------------------------

    def L(self) -> None:
        before = _info(self.store, self.key)
        now = self.clock()
        expired = before is None or before.invalidated or before.expires <= now
        self.session = self.manager.begin(self.sid, lazy=False)
        self.loaded_new = self.session.is_new
        assert self.session.is_new == expired, "rule 2: load returns exactly the live sessions"
        if expired:
            assert dict(self.session) == {} and self.session.id != self.sid
        elif before is not None and before.accessed < now - TOUCH:
            self.last_write = now  # touched by the load

    def P(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1

    def S(self) -> None:
        before = _info(self.store, self.key)
        now = self.clock()
        gone = before is None or before.invalidated or before.expires <= now
        outcome = self.manager.commit(self.session)
        after = _info(self.store, self.key)
        if self.session.is_new:
            assert self.session.id != self.sid, "a new session never reuses the old id"
        if gone or self.session.is_new:
            # Rule 3: the old record is neither re-created nor extended.
            if before is None:
                assert after is None
            else:
                assert after is not None
                assert (after.version, after.expires) == (before.version, before.expires)
            if not self.session.is_new:
                assert outcome.clear, "the client is told its session ended"
        else:
            assert before is not None and after is not None
            assert after.version == before.version + 1
            self.saved = True
            self.last_write = now

    # -- the cleanup --------------------------------------------------------

    def C(self) -> None:
        now = self.cleanup_now()
        self.candidates = [
            i.key for i in self.store.records(self.manager.app_id) if i.expires + GRACE <= now
        ]

    def D(self) -> None:
        now = self.cleanup_now()
        before = {i.key: i for i in self.store.records(self.manager.app_id)}
        if self.naive:
            for key in self.candidates:
                self.store.delete(key)
        else:
            self.store.purge(now=now, grace=GRACE)
        after = {i.key for i in self.store.records(self.manager.app_id)}
        if self.key in before and self.key not in after:
            self.lost = now < self.last_write + IDLE + GRACE
        if not self.naive:
            for key, info in before.items():
                if info.expires + GRACE > now:
                    assert key in after, "purge deleted a record not expired past grace"
            assert not self.lost, "rule 1: a session saved within idle + grace was deleted"


@pytest.fixture
def manager(managers: ManagerFactory, store: Store, clock: ManualClock, app_id: str) -> SessionManager:
    return managers(
        store, app_id=app_id, clock=clock, idle_timeout=IDLE, touch_interval=TOUCH,
        grace=GRACE, absolute_timeout=100 * IDLE,
    )


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_expiry_race(
    manager: SessionManager, clock: ManualClock, scenario: str, order: str
) -> None:
    race = Race(manager, clock, SCENARIOS[scenario], naive=False)
    race.run(order)
    final = manager.store.load(race.key, now=clock())
    if race.saved:
        assert final.status is LoadStatus.LOADED and final.record is not None
        with manager.open(race.sid, read_only=True) as session:
            assert session["n"] == 1, "the saved session survived the cleanup"
    else:
        assert final.status is not LoadStatus.LOADED, "an unsaved, expired session stays dead"
    if scenario.startswith("alive"):
        assert race.saved and race.loaded_new is False
    if scenario.startswith("expired"):
        assert race.loaded_new and not race.saved


def test_the_harness_finds_the_cleanup_race(manager: SessionManager, clock: ManualClock) -> None:
    """Negative control: with the cleanup's clock ahead by more than ``grace``.

    C then sees the session as expired past grace while the request (on its
    own clock) still loads and touches it. A cleanup that deletes what C
    decided loses the session whenever D comes after L: the mod_python race.
    ``purge``'s atomic re-check keeps it in all those orders; only when D runs
    before the load does the session go, which is why ``grace`` must exceed
    the clock skew between nodes plus the longest request.
    """
    skewed = Scenario(age=95, step=2, skew=GRACE + 10)
    lost: dict[bool, set[str]] = {True: set(), False: set()}
    for naive in (True, False):
        for order in ORDERS:
            race = Race(manager, clock, skewed, naive=naive)
            race.run(order)
            if race.lost or race.loaded_new:
                lost[naive].add(order)
            clock.advance(10 * IDLE)  # well apart from the next race
            manager.store.purge(now=clock() + 10 * IDLE, grace=GRACE)
    assert lost[True] == {"CLPSD", "CLPDS", "CLDPS", "CDLPS"}
    # Stores whose purge leaves deletion to native TTLs lose none at all.
    assert lost[False] <= {"CDLPS"}


# -- the property, on the store contract directly ---------------------------

_EVENTS = st.lists(
    st.tuples(st.sampled_from(["save", "load", "purge"]), st.integers(0, 3), st.integers(0, 80)),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=_EVENTS)
def test_purge_never_deletes_a_session_saved_within_idle_plus_grace(
    store: Store, clock: ManualClock, events: list[tuple[str, int, int]]
) -> None:
    """Saves, touching loads and purges at random times on four sessions.

    The model keeps, per session, when it was last written (created, saved or
    touched). After every purge, every session written within
    ``idle_timeout + grace`` is still there; a load never returns an expired
    session; a save onto an expired one is refused and a new id is created.
    """
    app_id = f"p{uuid.uuid4().hex[:12]}"
    now = clock()  # examples share the store; each has its own app_id
    keys: dict[int, RecordKey] = {}
    written: dict[int, float] = {}
    serial = itertools.count()

    def create(slot: int) -> None:
        keys[slot] = RecordKey(app_id, f"{next(serial):064x}")
        record = NewRecord(created=now, expires=now + IDLE, absolute_expires=now + 1000 * IDLE)
        assert store.create(keys[slot], record, now=now)
        written[slot] = now

    for op, slot, dt in events:
        now += dt
        alive = slot in keys and now < written[slot] + IDLE
        if op == "save":
            if slot in keys:
                result = store.apply(keys[slot], Change(IDLE, set={"v": b"x"}), now=now)
                assert (result.status is ApplyStatus.OK) == alive, "rule 3"
                if alive:
                    written[slot] = now
            if not alive:
                create(slot)
        elif op == "load" and slot in keys:
            loaded = store.load(keys[slot], now=now, touch=Touch(now - TOUCH, IDLE))
            assert (loaded.status is LoadStatus.LOADED) == alive, "rule 2"
            if alive and written[slot] < now - TOUCH:
                written[slot] = now
        elif op == "purge":
            store.purge(now=now, grace=GRACE)
            present = {i.key for i in store.records(app_id)}
            for s, key in keys.items():
                if now < written[s] + IDLE + GRACE:
                    assert key in present, "rule 1: purged within idle + grace"
