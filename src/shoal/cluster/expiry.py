"""Purge that announces: ``expired`` once cluster-wide, from the node that purged.

One code path for both purgers, ``SessionManager.purge`` (one app, the
manager's hub) and ``shoal purge`` (every app of the store, the CLI's own
node with one sending hub per app). The store's optional ``purge_ended``
deletes and returns what it deleted in the same atomic step, so a save
that lands during the purge is never announced with old values, nor
deleted unannounced. Tombstones (announced when they were invalidated),
rotation pointers and principal-index records are deleted silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .._rotation import is_pointer
from ..codec import JsonCodec
from ..principals import is_index_app, principal_in
from ..stores.base import Ended, Store
from .channels import has_channel
from .hub import Hub

__all__ = ["Announcer", "announce_expired", "purge_announcing"]


HubFor = Callable[[str], Hub | None]
"""The hub that announces for an app id, or None when that app is not announced."""


def announce_expired(ended: Iterable[Ended], hub_for: HubFor) -> int:
    """Raise ``expired`` (with the ended fields) for each ended session; how many."""
    count = 0
    for record in ended:
        key = record.key
        if record.invalidated or is_pointer(key) or is_index_app(key.app_id):
            continue
        hub = hub_for(key.app_id)
        if hub is None:
            continue
        fields = dict(record.fields)
        hub.emit("expired", key.id_hash, principal=principal_in(hub.codec, fields), fields=fields)
        count += 1
    return count


def purge_announcing(
    store: Store, *, now: float, grace: float, limit: int, hub_for: HubFor | None
) -> int:
    """One bounded purge batch; records deleted. Announces when it can.

    ``hub_for`` None, or a store without ``purge_ended``: a silent ``purge``.
    """
    purge_ended = getattr(store, "purge_ended", None)
    if purge_ended is None or hub_for is None:
        return store.purge(now=now, grace=grace, limit=limit)
    ended: list[Ended] = purge_ended(now=now, grace=grace, limit=limit)
    announce_expired(ended, hub_for)
    return len(ended)


class Announcer:
    """The sending side of a node that purges every app of a store (``shoal purge``).

    One hub per app id met, opened on first use, with no listener: it only
    publishes (no listener thread, no connection kept for listening).
    ``hub_for`` is None when the store has no events channel or no
    ``purge_ended``: there is no one to tell, and the purge stays silent.
    """

    def __init__(self, store: Store, node_id: str | None = None) -> None:
        self._store = store
        self._node_id = node_id
        self._hubs: dict[str, Hub] = {}
        self.hub_for: HubFor | None = (
            self._hub
            if has_channel(store) and getattr(store, "purge_ended", None) is not None
            else None
        )

    def _hub(self, app_id: str) -> Hub:
        hub = self._hubs.get(app_id)
        if hub is None:
            hub = Hub(
                app_id=app_id, node_id=self._node_id, store=self._store,
                codec=JsonCodec(), clock=time.time, events=True,
            )  # fmt: skip
            self._hubs[app_id] = hub
        return hub

    @property
    def sent(self) -> int:
        """Events published so far, over every app."""
        return sum(hub.sent for hub in self._hubs.values())

    def close(self) -> None:
        for hub in self._hubs.values():
            hub.close()
        self._hubs.clear()
