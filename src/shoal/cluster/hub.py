"""The cluster side of one manager: listeners, the events channel, near cache, metrics.

The manager calls ``emit`` where something happened to a session; the hub
builds the ``Event``, gives it to this process's listeners and, when
``events=True``, publishes it through the store's channel. A listener thread
receives every other node's events: it drops near-cache entries and calls
the listeners, once per event and node (a node skips its own events, which
it dispatched when it raised them). Each sender numbers its events, so a
receiver counts exactly what it missed (a reconnect, a pruned log) and logs
it; a missed event also clears the near cache, since nothing in it can be
trusted any more.

Nothing here runs for a request that raises no event: the manager checks
``hub.active`` first, and a hub with no listener and no channel is inactive.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ..codec import Codec, decode_field
from ..ids import session_ref
from ..session import RESERVED_PREFIX
from ..stores.base import Store
from . import events as ev
from .channels import Channel, channel_for
from .events import Event
from .listeners import Listener, Listeners
from .metrics import Metrics
from .near_cache import NearCache
from .node import default_node_id

__all__ = ["Hub"]

log = logging.getLogger("shoal.cluster")

# Per (node, app) sequence numbers, shared by every hub of the process, so two
# managers of one app in one process never reuse a number. Each has a lock held
# while a number is taken *and* its event published, so events leave in the
# order of their numbers and a receiver's gap is a real loss (rejected: taking
# the number outside the publish, where two threads publish out of order and
# every receiver logs the later one's predecessor as missed, then hears it).
_SEQ: dict[tuple[str, str], tuple[itertools.count[int], threading.Lock]] = {}
_SEQ_LOCK = threading.Lock()


def _sequence(node_id: str, app_id: str) -> tuple[itertools.count[int], threading.Lock]:
    with _SEQ_LOCK:
        return _SEQ.setdefault((node_id, app_id), (itertools.count(1), threading.Lock()))

# Events after which a cached copy of the session is wrong.
_DROPS = frozenset({"updated", "invalidated", "rotated", "expired", "restored"})


class Hub:
    """Listeners, channel, near cache and metrics of one ``(app_id, node_id)``."""

    def __init__(
        self,
        *,
        app_id: str,
        node_id: str | None,
        store: Store,
        codec: Codec,
        clock: Callable[[], float],
        events: bool = False,
        near_cache: NearCache | None = None,
        metrics: Metrics | None = None,
        send_values: bool = True,
        channel: Channel | None = None,
    ) -> None:
        self.app_id = app_id
        self._given_node_id = node_id
        self.node_id = node_id or default_node_id()
        self.codec, self.clock = codec, clock
        self.listeners = Listeners(self.node_id)
        self.near_cache = near_cache
        self.metrics = metrics
        self.send_values = send_values
        self._store = store
        self._channel: Channel | None = None
        self._channel_factory: Callable[[], Channel | None] = (
            (lambda: channel) if channel is not None else (lambda: channel_for(store, app_id))
        )
        self._pid = os.getpid()
        self._listening = False
        self._lock = threading.Lock()
        self._last_seq: dict[str, int] = {}
        self.received = 0
        self.missed = 0
        self.sent = 0
        self._seq, self._publishing = _sequence(self.node_id, app_id)
        self.events = events
        if events:
            self._open_channel()

    # -- setup ---------------------------------------------------------------

    @property
    def channel(self) -> Channel | None:
        """The store's channel while ``events=True`` (None otherwise or when it has none)."""
        self.check_fork()
        return self._channel

    def _open_channel(self) -> None:
        self._channel = self._channel_factory()
        if self._channel is None:
            log.info(
                "node %s: the store %s has no events channel; events stay in this process",
                self.node_id, self._store.url,
            )  # fmt: skip
            return
        self._listening = False
        if self.listeners or self.near_cache is not None:
            self._listen()

    def _listen(self) -> None:
        """Start the listener thread: only a hub with listeners or a near cache needs one
        (a node that only sends, e.g. a purge job, keeps no connection for it)."""
        if self._channel is not None and not self._listening:
            self._listening = True
            self._channel.start(self._deliver)

    def check_fork(self) -> None:
        """A forked worker has no listener thread: open its own channel."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._pid = os.getpid()
                    self._last_seq.clear()
                    if self._given_node_id is None:
                        self.node_id = default_node_id()
                        self.listeners.node_id = self.node_id
                    self._seq, self._publishing = _sequence(self.node_id, self.app_id)
                    if self.near_cache is not None:
                        self.near_cache.clear()
                    if self.events:
                        self._open_channel()

    @property
    def active(self) -> bool:
        """True when an event has somewhere to go (a listener or the channel)."""
        return bool(self.listeners) or self._channel is not None

    def add_listener(
        self, listener: Listener, events: Collection[str] | None = None, *, values: bool = False
    ) -> None:
        self.listeners.add(listener, events, values=values)
        self.check_fork()
        self._listen()

    # -- sending -------------------------------------------------------------

    def emit(
        self,
        name: str,
        id_hash: str,
        *,
        principal: str | None = None,
        detail: Mapping[str, Any] | None = None,
        fields: Mapping[str, bytes] | None = None,
    ) -> None:
        """Raise ``name`` for the session ``id_hash``: listeners here, then the channel.

        ``fields``: the ended session's encoded fields (invalidated, expired).
        Never raises: a failing listener or channel is logged.
        """
        self.check_fork()
        ref = session_ref(id_hash)
        if self.near_cache is not None and name in _DROPS:
            self.near_cache.drop_ref(self.app_id, ref)
        channel = self._channel
        wanted = self.listeners.wants(name)
        if not wanted and channel is None:
            return
        event = Event(
            event=name, app_id=self.app_id, node_id=self.node_id, time=self.clock(), ref=ref,
            principal=principal, detail=dict(detail or {}),
            fields=fields if fields is not None and name in ev.ENDING_EVENTS else None,
        )  # fmt: skip
        if wanted:
            self._dispatch(event)
        if channel is not None:
            self._publish(channel, event)

    def _publish(self, channel: Channel, event: Event) -> None:
        try:
            with self._publishing:
                seq = next(self._seq)
                channel.publish(ev.encode(_with_seq(event, seq), with_fields=self.send_values))
        except Exception as exc:  # noqa: BLE001 - the request already committed
            log.warning(
                "node %s: could not publish %s of session %s through the %s (%s: %s); "
                "other nodes miss it", self.node_id, event.event, event.ref, channel.name,
                type(exc).__name__, exc,
            )  # fmt: skip
            if self.metrics is not None:
                self.metrics.inc("store_errors", operation="publish")
            return
        self.sent += 1
        if self.metrics is not None:
            self.metrics.inc("events_sent", event=event.event)

    def _dispatch(self, event: Event) -> None:
        if event.event in ev.INTERNAL_EVENTS:
            return
        if event.fields is not None and self.listeners.wants_values():
            event = _with_values(event, self._values(event.fields))
        self.listeners.dispatch(event)

    def _values(self, fields: Mapping[str, bytes]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, data in fields.items():
            if key.startswith(RESERVED_PREFIX):
                continue
            try:
                values[key] = decode_field(self.codec, data)[0]
            except Exception:  # noqa: BLE001 - one undecodable value: leave it out
                log.warning("ended session value %r could not be decoded; left out", key)
        return values

    # -- receiving -----------------------------------------------------------

    def _deliver(self, data: bytes) -> None:
        """One event from the channel, on the listener thread."""
        try:
            event = ev.decode(data)
        except ValueError as exc:
            log.warning("node %s: ignored a malformed event (%s)", self.node_id, exc)
            return
        if event.app_id != self.app_id or event.node_id == self.node_id:
            return  # another app's, or ours: dispatched when it was raised
        self._count_gap(event.node_id, int(event.detail.get("seq", 0)))
        self.received += 1
        if self.metrics is not None:
            self.metrics.inc("events_received", event=event.event)
        if self.near_cache is not None and event.event in _DROPS:
            self.near_cache.drop_ref(self.app_id, event.ref)
        detail = {k: v for k, v in event.detail.items() if k != "seq"}
        self._dispatch(_with_detail(event, detail))

    def _count_gap(self, sender: str, seq: int) -> None:
        if seq <= 0:
            return
        with self._lock:
            last = self._last_seq.get(sender)
            self._last_seq[sender] = max(seq, last or 0)
        if last is not None and seq > last + 1:
            gap = seq - last - 1
            self.lost(gap, sender)

    def lost(self, count: int, sender: str = "?") -> None:
        """``count`` events from ``sender`` never arrived: log, count, clear the cache."""
        self.missed += count
        log.warning(
            "node %s missed %d event(s) from node %s; near cache cleared",
            self.node_id, count, sender,
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.inc("events_missed", count)
        if self.near_cache is not None:
            self.near_cache.clear()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def _with_seq(event: Event, seq: int) -> Event:
    return _with_detail(event, {**event.detail, "seq": seq})


def _with_detail(event: Event, detail: Mapping[str, Any]) -> Event:
    from dataclasses import replace

    return replace(event, detail=detail)


def _with_values(event: Event, values: Mapping[str, Any]) -> Event:
    from dataclasses import replace

    return replace(event, values=values)
