"""A circuit breaker per store URL, shared by every manager and thread of a process.

When a network store is down, each request would otherwise wait out a
connect, pool or socket timeout before its 503. The breaker *opens* on
either sign of an outage:

- one failure that took at least ``slow`` seconds (a timeout: a store that
  answers, answers in milliseconds, and a request must not wait a timeout
  again to learn what the last one learnt), or
- ``threshold`` consecutive ``StoreUnavailable``, none more than ``window``
  seconds after the one before (fast failures: refused, reset). The window
  runs from the *last* failure, so a sync worker that fails one request
  every few seconds still opens it.

While open, calls fail at once with ``StoreUnavailable("circuit open ...")``
for ``cooldown`` seconds. Then it is *half-open*: the next call goes
through as the one probe (the others still fail fast); the probe's success
*closes* the breaker, its failure opens it for another cooldown.

    closed --slow failure, or threshold in a row--> open --cooldown--> half-open
      ^                                               ^                   |
      +----------------- probe succeeds --------------+-- probe fails ----+

Rejected: a streak counted within a window from its *first* failure (the
former rule): failures that each take a timeout (5 s to a pool, 3 s to a
hung Redis) never fit enough of them in the window, so a slow outage, the
costliest kind, never opened it.

An outage is logged here, once per state change, on the ``shoal.breaker``
logger: opened (WARNING, with the cause and its one traceback), each probe
that fails (INFO), a summary every ``summary_every`` seconds while it lasts
(WARNING: how many calls failed fast), and closed again (WARNING: how long
it lasted, how many calls failed fast). The errors it raises or has logged
carry ``reported = True``, so the middleware logs nothing per request.

``open_store()`` wraps every network store (``NETWORK_SCHEMES`` in
``stores/__init__.py``) in a ``BreakerStore``, taking the breaker for its
URL from a process-wide registry, so stores need no code of their own for
it. Only ``StoreUnavailable`` counts as a failure; any answer from the store
(a conflict, a lock refused) is a success. ``wait_unlocked`` and ``close``
pass through ungated: neither reports the store's health.

Settings come from the store URL (and are removed from it before the store
sees it): ``breaker=off``, ``breaker_threshold``, ``breaker_window``,
``breaker_cooldown``, ``breaker_slow``. Time comes from an injectable clock
(``time.monotonic`` by default), so tests need no sleeps.

Rejected: a breaker per store object (each manager or worker thread would
have to discover the outage on its own, each paying a timeout), and
retrying inside the breaker (retries belong to idempotent reads in the
stores, where they are safe).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError, StoreUnavailable
from ._url import boolean, mask_url
from ._forward import AsyncForwarder
from .base import (
    ApplyResult,
    AsyncStore,
    Change,
    LoadResult,
    LockRequest,
    NewRecord,
    RecordInfo,
    RecordKey,
    Store,
    Touch,
)

__all__ = [
    "AsyncBreakerStore",
    "BreakerSettings",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "Gate",
    "breaker_for",
    "split_breaker_options",
]

T = TypeVar("T")

log = logging.getLogger("shoal.breaker")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """What opens the breaker, and for how long.

    A failure that took at least ``slow`` s, or ``threshold`` failures in a
    row each within ``window`` s of the one before, open it for ``cooldown``
    s. ``slow`` is below every default timeout of the network stores (1 to
    2 s), so their first timeout opens it; ``slow=inf`` counts only.
    ``probe_timeout``: a probe that has not reported after this long (its
    thread died or hangs) no longer blocks the next probe.
    ``summary_every``: while open, how often the log says it still is.
    """

    threshold: int = 3
    window: float = 10.0
    cooldown: float = 5.0
    slow: float = 0.5
    probe_timeout: float = 30.0
    summary_every: float = 30.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ConfigError("breaker_threshold must be at least 1")
        seconds = {
            "breaker_window": self.window,
            "breaker_cooldown": self.cooldown,
            "breaker_slow": self.slow,
            "probe_timeout": self.probe_timeout,
            "summary_every": self.summary_every,
        }
        for name, value in seconds.items():
            # "not > 0" also refuses NaN, which compares false with everything.
            if not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, not {value}")
        # Infinite, these would never probe again: open for the process's life.
        for name in ("breaker_cooldown", "probe_timeout"):
            if math.isinf(seconds[name]):
                raise ConfigError(f"{name} must be finite: the breaker would never close")


class CircuitBreaker:
    """The state machine; thread-safe, time from ``clock``."""

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or BreakerSettings()
        self.clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        # Closed with no failure counted: what a call's outcome cannot change
        # unless it fails (read without the lock by BreakerStore's fast path,
        # written with _state and _failures under it).
        self._quiet = True
        self._last_failure = 0.0
        self._opened_at = 0.0
        self._probe_started: float | None = None
        self._last_error = ""
        self._store_name = ""  # the (masked) URL the last failure named
        # The outage, for the log: when it began, calls refused in all and
        # since the last summary, when that summary was written.
        self._outage_started = 0.0
        self._refused = 0
        self._refused_since_summary = 0
        self._summary_at = 0.0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state.value} failures={self._failures}>"

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted so far in the current streak."""
        with self._lock:
            return self._failures

    def before(self, store: str) -> bool:
        """Admit a call or raise ``StoreUnavailable``; True when it is the probe."""
        if self._state is BreakerState.CLOSED:
            # The common case without the lock: reading one attribute is
            # atomic, and a call admitted just as the breaker opens is one
            # of the "late" calls ``failure`` already tolerates.
            return False
        return self._admit(store)

    def _admit(self, store: str) -> bool:
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return False
            now = self.clock()
            if self._state is BreakerState.OPEN:
                wait = self._opened_at + self.settings.cooldown - now
                if wait > 0:
                    refusal = self._refusal(store, now, f"next probe in {wait:.1f}s")
                else:
                    self._state = BreakerState.HALF_OPEN
            if self._state is BreakerState.HALF_OPEN:
                probe = self._probe_started
                if probe is None or now - probe >= self.settings.probe_timeout:
                    self._probe_started = now
                    log.debug("probing session store %s", store)
                    return True
                refusal = self._refusal(store, now, "a probe is in flight")
            summary = self._summary(store, now)
        if summary:
            log.warning(*summary)
        raise refusal

    def _refusal(self, store: str, now: float, when: str) -> StoreUnavailable:
        self._refused += 1
        self._refused_since_summary += 1
        last = f"; last error: {self._last_error}" if self._last_error else ""
        n = self._failures
        error = StoreUnavailable(
            store, f"circuit open after {n} consecutive failure{'s' * (n != 1)}, {when}{last}"
        )
        error.reported = True  # the opening was logged, and the summaries count it
        return error

    def _summary(self, store: str, now: float) -> tuple[Any, ...] | None:
        """The periodic "still unavailable" record, when one is due (under the lock)."""
        since = now - self._summary_at
        if since < self.settings.summary_every:
            return None
        refused, self._refused_since_summary, self._summary_at = (
            self._refused_since_summary, 0, now,
        )
        return (
            "session store %s still unavailable after %.0fs: %d calls failed fast "
            "in the last %.0fs; last error: %s",
            store, now - self._outage_started, refused, since, self._last_error,
        )

    def success(self, probe: bool) -> None:
        """The store answered. Closes a half-open breaker when the probe did."""
        if self._state is BreakerState.CLOSED and not self._failures and not probe:
            return  # nothing to reset: the common case, without the lock
        with self._lock:
            if self._state is BreakerState.CLOSED:
                self._close()
                return
            if not probe:
                return  # a late answer to a call admitted before it opened
            now = self.clock()
            lasted, refused = now - self._outage_started, self._refused
            self._close()
        log.warning(
            "session store %s is back: the outage lasted %.1fs, %d calls failed fast",
            self._store_name, lasted, refused,
        )

    def failure(self, probe: bool, error: StoreUnavailable, *, elapsed: float = 0.0) -> None:
        """A call failed with ``StoreUnavailable`` after ``elapsed`` seconds."""
        with self._lock:
            now = self.clock()
            self._store_name = error.store
            self._last_error = error.detail or str(error)
            if self._state is BreakerState.CLOSED:
                if self._failures and now - self._last_failure > self.settings.window:
                    self._failures = 0  # a quiet gap: the old streak is over
                self._failures += 1
                self._last_failure = now
                self._quiet = False
                slow = elapsed >= self.settings.slow
                if not (slow or self._failures >= self.settings.threshold):
                    return  # not reported: the middleware logs this one
                self._open(now)
                self._outage_started = self._summary_at = now
                self._refused = self._refused_since_summary = 0
                why = (
                    f"a call failed after {elapsed:.1f}s" if slow
                    else f"{self._failures} calls failed in a row"
                )
                record: tuple[Any, ...] = (
                    "session store %s unavailable, circuit open: %s (%s); calls fail fast, "
                    "next probe in %gs",
                    error.store, why, self._last_error, self.settings.cooldown,
                )
                traceback = True
            elif probe:
                self._failures += 1
                self._last_failure = now
                self._open(now)
                record = (
                    "probe of session store %s failed (%s); next probe in %gs",
                    error.store, self._last_error, self.settings.cooldown,
                )
                traceback = False
                summary = self._summary(error.store, now)
            else:
                # Late failures of calls admitted before it opened change nothing.
                error.reported = True
                return
        error.reported = True
        if traceback:
            log.warning(*record, exc_info=error)
        else:
            log.info(*record)
            if summary:
                log.warning(*summary)

    def neutral(self, probe: bool) -> None:
        """A call ended without telling anything (a non-store error): free its probe slot."""
        with self._lock:
            if probe and self._state is BreakerState.HALF_OPEN:
                self._probe_started = None

    def reset(self) -> None:
        """Close the breaker and forget the streak (admin use and tests)."""
        with self._lock:
            self._close()

    def _open(self, now: float) -> None:
        self._state, self._opened_at, self._probe_started = BreakerState.OPEN, now, None
        self._quiet = False

    def _close(self) -> None:
        self._state, self._failures, self._probe_started = BreakerState.CLOSED, 0, None
        self._quiet = True
        self._last_error = ""
        self._refused = self._refused_since_summary = 0


class Gate:
    """One store call through ``breaker``: ``with Gate(breaker, url):`` around it.

    A plain (sync) context manager, so the sync ``BreakerStore`` and the
    async ``AsyncBreakerStore`` put their calls through the same steps: admit
    or refuse (``before``), then report the outcome (``success``,
    ``failure`` with the time it took, or ``neutral`` for an error that
    tells nothing about the store, a cancellation included). Nothing in it
    blocks: the breaker's lock is held for a few attribute writes.
    Rejected: an async copy of ``BreakerStore._call``.

    ``BreakerStore``'s request methods (load, create, apply) skip it while
    the breaker is quiet (closed, no failure counted), where these steps
    reduce to reading the clock and, on ``StoreUnavailable``, ``failure``:
    measured 1.3 -> 0.4 us a call.
    """

    __slots__ = ("_breaker", "_probe", "_started", "_store")

    def __init__(self, breaker: CircuitBreaker, store: str) -> None:
        self._breaker = breaker
        self._store = store
        self._probe = False
        self._started = 0.0

    def __enter__(self) -> None:
        self._probe = self._breaker.before(self._store)
        self._started = self._breaker.clock()

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        breaker = self._breaker
        if exc is None:
            breaker.success(self._probe)
        elif isinstance(exc, StoreUnavailable):
            breaker.failure(self._probe, exc, elapsed=breaker.clock() - self._started)
        else:
            breaker.neutral(self._probe)


class BreakerStore:
    """A ``Store`` that passes every call through its ``CircuitBreaker``.

    Anything else (``migrate()``, ``table``...) is read from the wrapped store.
    """

    def __init__(self, store: Store, breaker: CircuitBreaker) -> None:
        self.store = store
        self.breaker = breaker
        self.url = store.url

    def __repr__(self) -> str:
        return f"<BreakerStore {self.breaker.state.value} {self.store!r}>"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    # A transparent proxy: ``isinstance(opened, PostgresStore)`` holds for
    # what open_store() returns, as it does for unittest.mock's ``spec``
    # (isinstance falls back to ``__class__``); ``type()`` still tells the truth.
    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: D105
        return type(self.store)

    def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with Gate(self.breaker, self.url):
            return method(*args, **kwargs)

    # load, create and apply, on every request's path, are written out: while
    # the breaker is quiet, a call that answers changes nothing and one that
    # fails is no probe, so Gate's steps are the clock and ``failure`` (and
    # ``success`` if another call failed meanwhile). A non-store error is
    # ``neutral``, a no-op when not the probe. Rejected: ``_call`` for them,
    # whose Gate and argument packing cost 3x these lines (measured).

    def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> LoadResult:
        breaker = self.breaker
        if not breaker._quiet:
            return self._call(self.store.load, key, now=now, touch=touch, lock=lock)
        started = breaker.clock()
        try:
            result = self.store.load(key, now=now, touch=touch, lock=lock)
        except StoreUnavailable as exc:
            breaker.failure(False, exc, elapsed=breaker.clock() - started)
            raise
        if not breaker._quiet:
            breaker.success(False)
        return result

    def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> bool:
        breaker = self.breaker
        if not breaker._quiet:
            return self._call(self.store.create, key, record, now=now, lock=lock)
        started = breaker.clock()
        try:
            result = self.store.create(key, record, now=now, lock=lock)
        except StoreUnavailable as exc:
            breaker.failure(False, exc, elapsed=breaker.clock() - started)
            raise
        if not breaker._quiet:
            breaker.success(False)
        return result

    def apply(self, key: RecordKey, change: Change, *, now: float) -> ApplyResult:
        breaker = self.breaker
        if not breaker._quiet:
            return self._call(self.store.apply, key, change, now=now)
        started = breaker.clock()
        try:
            result = self.store.apply(key, change, now=now)
        except StoreUnavailable as exc:
            breaker.failure(False, exc, elapsed=breaker.clock() - started)
            raise
        if not breaker._quiet:
            breaker.success(False)
        return result

    def invalidate(self, key: RecordKey, *, now: float, lease_token: str | None = None) -> bool:
        return self._call(self.store.invalidate, key, now=now, lease_token=lease_token)

    def delete(self, key: RecordKey) -> bool:
        return self._call(self.store.delete, key)

    def unlock(self, key: RecordKey, token: str) -> None:
        self._call(self.store.unlock, key, token)

    def renew(self, key: RecordKey, token: str, *, now: float, lease: float) -> bool:
        return self._call(self.store.renew, key, token, now=now, lease=lease)

    def wait_unlocked(self, key: RecordKey, timeout: float) -> None:
        self.store.wait_unlocked(key, timeout)

    def records(self, app_id: str | None = None) -> Iterator[RecordInfo]:
        # Read the listing in full inside the breaker; a generator could
        # fail later, outside of it.
        return iter(self._call(lambda: list(self.store.records(app_id))))

    def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        return self._call(self.store.purge, now=now, grace=grace, limit=limit)

    def close(self) -> None:
        self.store.close()


class AsyncBreakerStore(AsyncForwarder):
    """An ``AsyncStore`` whose calls pass through a ``CircuitBreaker``: the sync one's gate.

    The breaker is the one ``open_store`` gives the sync store of the same
    URL (``breaker_for``), so a sync and an async manager of one process
    learn of an outage together. ``wait_unlocked`` and ``aclose`` pass
    through ungated, as in ``BreakerStore``.
    """

    def __init__(self, store: AsyncStore, breaker: CircuitBreaker) -> None:
        self.store = store
        self.breaker = breaker
        self.url = store.url

    def __repr__(self) -> str:
        return f"<AsyncBreakerStore {self.breaker.state.value} {self.store!r}>"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def _forward(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.store, name)
        if name in _UNGATED:
            return await method(*args, **kwargs)
        breaker = self.breaker
        if not breaker._quiet:
            with Gate(breaker, self.url):
                return await method(*args, **kwargs)
        # Quiet (closed, no failure counted): BreakerStore.load's steps.
        started = breaker.clock()
        try:
            result = await method(*args, **kwargs)
        except StoreUnavailable as exc:
            breaker.failure(False, exc, elapsed=breaker.clock() - started)
            raise
        if not breaker._quiet:
            breaker.success(False)
        return result


# Calls that tell nothing of the store's health (see the module docs).
_UNGATED = frozenset({"wait_unlocked", "aclose"})


# -- the process-wide registry --------------------------------------------------

_BREAKERS: dict[str, CircuitBreaker] = {}
_REGISTRY_LOCK = threading.Lock()


def breaker_for(url: str, settings: BreakerSettings | None = None) -> CircuitBreaker:
    """The breaker of ``url`` in this process, created on first use."""
    with _REGISTRY_LOCK:
        breaker = _BREAKERS.get(url)
        if breaker is None:
            breaker = _BREAKERS[url] = CircuitBreaker(settings)
        return breaker


_SETTINGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "breaker_threshold": ("threshold", int),
    "breaker_window": ("window", float),
    "breaker_cooldown": ("cooldown", float),
    "breaker_slow": ("slow", float),
}


def split_breaker_options(url: str) -> tuple[str, BreakerSettings | None]:
    """Take the ``breaker*`` parameters out of ``url``.

    Returns the URL the store should see and the breaker settings, or None
    when ``breaker=off``.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    enabled = True
    for name, raw in query:
        try:
            if name == "breaker":
                enabled = boolean(raw)
            elif name in _SETTINGS:
                field, cast = _SETTINGS[name]
                values[field] = cast(raw)
            else:
                kept.append((name, raw))
        except ValueError as exc:
            raise ConfigError(
                f"store URL parameter {name}={raw!r} in {mask_url(url)}: {exc}"
            ) from exc
    if len(kept) == len(query):
        return url, BreakerSettings(**values) if enabled else None
    store_url = urlunsplit(parts._replace(query=urlencode(kept)))
    return store_url, (BreakerSettings(**values) if enabled else None)


def _after_fork_in_child() -> None:
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    for breaker in _BREAKERS.values():
        breaker._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
