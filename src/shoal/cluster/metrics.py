"""Prometheus metrics of the session layer (``pip install 'shoal[metrics]'``).

``SessionManager(..., metrics=True)`` records into prometheus-client's
default registry, labelled by ``app_id``; expose them with
``prometheus_client.make_wsgi_app()`` / ``make_asgi_app()`` mounted at
``/metrics`` (docs/cluster.md). The metric objects are made once per process
(prometheus-client refuses a second registration of one name), and a manager
without ``metrics=True`` never touches them.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import ConfigError

__all__ = ["Metrics", "metrics_for"]

_LOCK = threading.Lock()
_FAMILIES: dict[str, Any] | None = None

# Latency buckets for one store operation: 0.1 ms (memory) to 2.5 s (a
# failing network store stopped by its timeouts).
_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


def _families() -> dict[str, Any]:
    global _FAMILIES
    with _LOCK:
        if _FAMILIES is None:
            try:
                from prometheus_client import Counter, Histogram
            except ImportError as exc:
                raise ConfigError(
                    "metrics=True needs prometheus-client: pip install 'shoal[metrics]'"
                ) from exc
            app = ["app_id"]
            _FAMILIES = {
                "loads": Counter("shoal_loads", "Session loads from the store", [*app, "status"]),
                "saves": Counter("shoal_saves", "Session saves (creates included)", app),
                "conflicts": Counter("shoal_conflicts", "Optimistic conflicts", app),
                "lock_waits": Counter("shoal_lock_waits", "Waits for a session lease", app),
                "lock_wait_seconds": Counter(
                    "shoal_lock_wait_seconds", "Time spent waiting for leases", app
                ),
                "lock_timeouts": Counter("shoal_lock_timeouts", "Lease waits that gave up", app),
                "replica_restores": Counter(
                    "shoal_replica_restores", "Sessions restored from a sealed replica", app
                ),
                "store_errors": Counter(
                    "shoal_store_errors", "Store calls that failed", [*app, "operation"]
                ),
                "near_cache_hits": Counter(
                    "shoal_near_cache_hits", "read_only opens served without the store", app
                ),
                "events_sent": Counter("shoal_events_sent", "Events published", [*app, "event"]),
                "events_received": Counter(
                    "shoal_events_received", "Events received from other nodes", [*app, "event"]
                ),
                "events_missed": Counter(
                    "shoal_events_missed", "Events other nodes sent that never arrived", app
                ),
                "latency": Histogram(
                    "shoal_operation_seconds",
                    "Latency of one store operation",
                    [*app, "operation"],
                    buckets=_BUCKETS,
                ),
            }
        return _FAMILIES


class Metrics:
    """The metrics of one ``app_id``: thin bound helpers over the shared families."""

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self._f = _families()

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to counter ``name`` (``labels`` beyond ``app_id``)."""
        self._f[name].labels(app_id=self.app_id, **labels).inc(amount)

    def observe(self, operation: str, seconds: float) -> None:
        """Record one ``operation``'s latency."""
        self._f["latency"].labels(app_id=self.app_id, operation=operation).observe(seconds)


def metrics_for(app_id: str, enabled: bool) -> Metrics | None:
    """A ``Metrics`` when ``enabled``; ``ConfigError`` naming the extra when missing."""
    return Metrics(app_id) if enabled else None
