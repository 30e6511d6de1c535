"""Session events: what happened to which session, on which node, and its wire form.

An ``Event`` never holds a raw session id, only ``ref`` (``session_ref`` of
the id's hash, as in the logs). ``values`` (the ended session's decoded
values) is set only on ``invalidated`` and ``expired`` and only for
listeners that asked for it (``add_listener(..., values=True)``).

On the wire an event is one JSON object (``encode``/``decode``); ended
values travel as the store's own encoded field bytes (base64), decoded by
the receiving manager's codec. ``updated`` is internal: it drops near-cache
entries on other nodes and is never given to listeners.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

__all__ = ["ENDING_EVENTS", "EVENTS", "INTERNAL_EVENTS", "Event", "decode", "encode"]

EVENTS: Final = frozenset(
    {
        "created", "rotated", "invalidated", "expired", "restored",
        "conflict", "lock_timeout", "rollback",
    }
)  # fmt: skip
"""The events a listener can ask for."""

INTERNAL_EVENTS: Final = frozenset({"updated"})
"""Events only the cluster machinery reads (near-cache invalidation)."""

ENDING_EVENTS: Final = frozenset({"invalidated", "expired"})
"""Events that may carry the ended session's values."""


@dataclass(frozen=True, slots=True)
class Event:
    """One session event.

    ``ref``: the hashed session reference (never the id). ``local``: raised
    by this process (False when it came through the store's channel).
    ``detail``: small event-specific facts (``new_ref`` on rotated, the
    conflicting ``keys`` on conflict, ``waited`` on lock_timeout).
    """

    event: str
    app_id: str
    node_id: str
    time: float
    ref: str
    principal: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    values: Mapping[str, Any] | None = None
    local: bool = True
    fields: Mapping[str, bytes] | None = field(default=None, repr=False, compare=False)
    """The ended session's encoded fields (the wire form of ``values``)."""

    def as_dict(self) -> dict[str, Any]:
        """The event as plain JSON-able data (``shoal watch --json``), without values."""
        return {
            "event": self.event,
            "app_id": self.app_id,
            "node_id": self.node_id,
            "time": self.time,
            "ref": self.ref,
            "principal": self.principal,
            "detail": dict(self.detail),
        }


def encode(event: Event, *, with_fields: bool = True) -> bytes:
    """The JSON wire form; the ended fields are included when set and asked for."""
    data = event.as_dict()
    if with_fields and event.fields is not None:
        data["fields"] = {k: base64.b64encode(v).decode("ascii") for k, v in event.fields.items()}
    return orjson.dumps(data)


def decode(raw: bytes | str) -> Event:
    """An event read from a channel (``local`` False); ``ValueError`` when malformed."""
    try:
        data = orjson.loads(raw)
        raw_fields = data.get("fields")
        fields = (
            {str(k): base64.b64decode(v) for k, v in raw_fields.items()}
            if isinstance(raw_fields, dict)
            else None
        )
        principal = data.get("principal")
        return Event(
            event=str(data["event"]),
            app_id=str(data["app_id"]),
            node_id=str(data["node_id"]),
            time=float(data["time"]),
            ref=str(data["ref"]),
            principal=None if principal is None else str(principal),
            detail=dict(data.get("detail") or {}),
            local=False,
            fields=fields,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a shoal event: {exc}") from None
