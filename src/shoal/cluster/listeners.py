"""Listener registry: who wants which events, and a dispatch that never raises.

A listener is a callable taking one ``Event``. One that raises is logged
(naming the node it ran on, the node that sent the event, and the session
only by its ref) and the others still run: an event
is news about a request, never a part of it, so it cannot fail the request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from ..errors import ConfigError
from .events import ENDING_EVENTS, EVENTS, Event

__all__ = ["Listener", "Listeners"]

log = logging.getLogger("shoal.cluster")

Listener = Callable[[Event], object]


@dataclass(frozen=True, slots=True)
class _Entry:
    listener: Listener
    events: frozenset[str]
    values: bool


class Listeners:
    """The listeners of one manager (node ``node_id``). Thread-safe: events
    arrive on a listener thread."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._entries: tuple[_Entry, ...] = ()
        self._lock = threading.Lock()

    def add(
        self, listener: Listener, events: Collection[str] | None = None, *, values: bool = False
    ) -> None:
        """Call ``listener`` for ``events`` (all when None).

        ``values=True``: give it the ended session's values on ``invalidated``
        and ``expired``.
        """
        chosen = frozenset(EVENTS if events is None else events)
        unknown = chosen - EVENTS
        if isinstance(events, str) or unknown:
            bad = sorted(unknown) if not isinstance(events, str) else [events]
            raise ConfigError(
                f"unknown session event(s) {bad}; pass a list of: {', '.join(sorted(EVENTS))}"
            )
        if values and not chosen & ENDING_EVENTS:
            raise ConfigError(
                "values=True only applies to 'invalidated' and 'expired'; add one of them to events"
            )
        with self._lock:
            self._entries = (*self._entries, _Entry(listener, chosen, values))

    def remove(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error when it was not added)."""
        with self._lock:
            self._entries = tuple(e for e in self._entries if e.listener is not listener)

    def wants(self, event: str) -> bool:
        """True when some listener is registered for ``event``."""
        return any(event in e.events for e in self._entries)

    def wants_values(self) -> bool:
        """True when some listener asked for ended values."""
        return any(e.values for e in self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def dispatch(self, event: Event) -> int:
        """Call every listener of ``event.event``; the number that raised (logged)."""
        failed = 0
        for entry in self._entries:
            if event.event not in entry.events:
                continue
            given = event if entry.values else replace(event, values=None)
            try:
                entry.listener(given)
            except Exception:  # noqa: BLE001 - a listener never breaks the request
                failed += 1
                log.exception(
                    "node %s: session listener %r failed on %s of session %s from node %s",
                    self.node_id,
                    getattr(entry.listener, "__qualname__", entry.listener),
                    event.event,
                    event.ref,
                    event.node_id,
                )
        return failed
