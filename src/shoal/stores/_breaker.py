"""A circuit breaker per store URL, shared by every manager and thread of a process.

When a network store is down, each request would otherwise wait out a
connect or pool timeout before its 503. After ``threshold`` consecutive
``StoreUnavailable`` within ``window`` seconds the breaker *opens*: calls
fail at once with ``StoreUnavailable("circuit open ...")`` for ``cooldown``
seconds. Then it is *half-open*: the next call goes through as the one
probe (the others still fail fast); the probe's success *closes* the
breaker, its failure opens it for another cooldown.

    closed --threshold failures in window--> open --cooldown--> half-open
      ^                                        ^                   |
      +------------- probe succeeds -----------+-- probe fails ----+

``open_store()`` wraps every network store (``NETWORK_SCHEMES`` in
``stores/__init__.py``) in a ``BreakerStore``, taking the breaker for its
URL from a process-wide registry, so stores need no code of their own for
it. Only ``StoreUnavailable`` counts as a failure; any answer from the store
(a conflict, a lock refused) is a success. ``wait_unlocked`` and ``close``
pass through ungated: neither reports the store's health.

Settings come from the store URL (and are removed from it before the store
sees it): ``breaker=off``, ``breaker_threshold``, ``breaker_window``,
``breaker_cooldown``. Time comes from an injectable clock
(``time.monotonic`` by default), so tests need no sleeps.

Rejected: a breaker per store object (each manager or worker thread would
have to discover the outage on its own, each paying a timeout), and
retrying inside the breaker (retries belong to idempotent reads in the
stores, where they are safe).
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError, StoreUnavailable
from ._url import boolean, mask_url
from .base import (
    ApplyResult,
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
    "BreakerSettings",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "breaker_for",
    "split_breaker_options",
]

T = TypeVar("T")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """``threshold`` failures within ``window`` s open it for ``cooldown`` s.

    ``probe_timeout``: a probe that has not reported after this long (its
    thread died or hangs) no longer blocks the next probe.
    """

    threshold: int = 5
    window: float = 10.0
    cooldown: float = 5.0
    probe_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ConfigError("breaker_threshold must be at least 1")
        if self.window <= 0 or self.cooldown <= 0 or self.probe_timeout <= 0:
            raise ConfigError("breaker_window and breaker_cooldown must be positive seconds")


class CircuitBreaker:
    """The state machine; thread-safe, time from ``clock``."""

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._streak_started = 0.0
        self._opened_at = 0.0
        self._probe_started: float | None = None
        self._last_error = ""

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
            now = self._clock()
            if self._state is BreakerState.OPEN:
                wait = self._opened_at + self.settings.cooldown - now
                if wait > 0:
                    raise self._refusal(store, f"next probe in {wait:.1f}s")
                self._state = BreakerState.HALF_OPEN
            probe = self._probe_started
            if probe is not None and now - probe < self.settings.probe_timeout:
                raise self._refusal(store, "a probe is in flight")
            self._probe_started = now
            return True

    def _refusal(self, store: str, when: str) -> StoreUnavailable:
        last = f"; last error: {self._last_error}" if self._last_error else ""
        return StoreUnavailable(
            store, f"circuit open after {self._failures} consecutive failures, {when}{last}"
        )

    def success(self, probe: bool) -> None:
        """The store answered. Closes a half-open breaker when the probe did."""
        if self._state is BreakerState.CLOSED and not self._failures and not probe:
            return  # nothing to reset: the common case, without the lock
        with self._lock:
            if self._state is BreakerState.CLOSED or probe:
                self._close()

    def failure(self, probe: bool, error: StoreUnavailable) -> None:
        """A call failed with ``StoreUnavailable``."""
        with self._lock:
            now = self._clock()
            self._last_error = error.detail or str(error)
            if self._state is BreakerState.CLOSED:
                if self._failures == 0 or now - self._streak_started > self.settings.window:
                    self._failures, self._streak_started = 0, now
                self._failures += 1
                if self._failures >= self.settings.threshold:
                    self._open(now)
            elif probe:
                self._failures += 1
                self._open(now)
            # Late failures of calls admitted before it opened change nothing.

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

    def _close(self) -> None:
        self._state, self._failures, self._probe_started = BreakerState.CLOSED, 0, None
        self._last_error = ""


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
        probe = self.breaker.before(self.url)
        try:
            result = method(*args, **kwargs)
        except StoreUnavailable as exc:
            self.breaker.failure(probe, exc)
            raise
        except BaseException:
            self.breaker.neutral(probe)
            raise
        self.breaker.success(probe)
        return result

    def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> LoadResult:
        return self._call(self.store.load, key, now=now, touch=touch, lock=lock)

    def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> bool:
        return self._call(self.store.create, key, record, now=now, lock=lock)

    def apply(self, key: RecordKey, change: Change, *, now: float) -> ApplyResult:
        return self._call(self.store.apply, key, change, now=now)

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
