"""An outage of the store logs its state changes, not one record per request.

The store is a MemoryStore switched "down" (every call raises
``StoreUnavailable`` after a timeout's worth of the breaker's manual clock)
behind a circuit breaker on that clock; a WSGI client sends a request per
0.1 s of clock time through a minute of outage, then the store comes back.
The shoal loggers must say: the breaker opened (with the cause and at most
one traceback), a summary every 30 s, and that the store is back (how long
the outage lasted, how many calls failed fast); nothing per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from werkzeug.test import Client

from shoal import ManualClock, SessionManager, StoreUnavailable
from shoal.stores._breaker import BreakerSettings, BreakerState, BreakerStore, CircuitBreaker
from shoal.stores.base import RecordKey
from shoal.stores.memory import MemoryStore
from shoal.wsgi import SessionMiddleware

OUTAGE = 60.0  # seconds of clock time the store is down
PACE = 0.1  # clock seconds between two requests


class SwitchedStore(MemoryStore):
    """Fails every call while ``down``, after ``delay`` seconds of ``clock``."""

    def __init__(self, clock: ManualClock, delay: float) -> None:
        super().__init__()
        self.clock, self.delay, self.down = clock, delay, False

    def _step(self, key: RecordKey, step: Any, *, notify: bool = False) -> Any:
        if self.down:
            self.clock.advance(self.delay)
            try:
                raise TimeoutError("timed out")
            except OSError as exc:
                raise StoreUnavailable(self.url, f"TimeoutError: {exc}") from exc
        return super()._step(key, step, notify=notify)


def counter(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = environ["shoal.session"]
    session["n"] = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize("policy", ["merge", "serialized"])
@pytest.mark.parametrize("delay", [0.0, 2.0], ids=["refused", "timeout"])
def test_an_outage_logs_state_changes_not_requests(
    caplog: pytest.LogCaptureFixture, policy: str, delay: float
) -> None:
    clock = ManualClock(0.0)
    inner = SwitchedStore(clock, delay)
    breaker = CircuitBreaker(BreakerSettings(), clock=clock)
    manager = SessionManager(BreakerStore(inner, breaker), app_id="outage", policy=policy)
    client = Client(SessionMiddleware(counter, manager))
    assert client.get("/").status_code == 200

    caplog.set_level(logging.DEBUG, logger="shoal")
    inner.down = True
    start = clock()
    requests = 0
    while clock() - start < OUTAGE:
        assert client.get("/").status_code == 503
        requests += 1
        clock.advance(PACE)
    inner.down = False
    clock.advance(breaker.settings.cooldown)
    assert client.get("/").status_code == 200, "the probe closes it"
    assert breaker.state is BreakerState.CLOSED

    shoal = [r for r in caplog.records if r.name.startswith("shoal")]
    noisy = [r for r in shoal if r.levelno >= logging.INFO]
    warnings = [r for r in noisy if r.levelno >= logging.WARNING]
    text = "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in noisy)
    assert requests > 300
    # Opened, a summary per 30 s, back again; a few failures before it opened.
    summaries = int(OUTAGE // 30)
    assert len(warnings) <= 1 + summaries + 1 + breaker.settings.threshold, text
    # Probes (one per cooldown) may say so at INFO; still nothing per request.
    probes = int(OUTAGE // breaker.settings.cooldown) + 1
    assert len(noisy) <= len(warnings) + probes, text
    assert sum(r.exc_info is not None for r in shoal) <= 1, "at most one traceback"
    assert any("open" in r.getMessage() and "TimeoutError" in r.getMessage() for r in warnings)
    assert any("still unavailable" in r.getMessage() for r in warnings), text
    back = [r.getMessage() for r in warnings if "back" in r.getMessage()]
    assert len(back) == 1, text
    assert "outage lasted" in back[0] and "failed fast" in back[0], back
