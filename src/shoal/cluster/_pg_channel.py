"""PostgreSQL's event channel: ``NOTIFY <table>_events`` heard by a ``LISTEN`` connection.

A payload holds one small JSON event; one that is too big for NOTIFY's
8000-byte limit (the ended session's values) is written to
``shoal_event_values`` in the same statement, and the payload is only a
reference (``@<id>``) that each listener reads back. Rows are kept
``values_retention`` seconds. The listener connection is its own (not
pooled), on a thread that reconnects by itself.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from . import _statements as q
from ._receiver import Receiver
from .channels import Deliver

__all__ = ["PostgresChannel"]

_PAYLOAD_LIMIT = 7900  # NOTIFY refuses 8000 bytes and more; keep a margin
_PRUNE_EVERY = 64


class PostgresChannel:
    """LISTEN/NOTIFY through the store's pool and conninfo (``PostgresStore``)."""

    name = "postgresql listen/notify"

    def __init__(self, store: Any, app_id: str, *, values_retention: float = 300.0) -> None:
        self._store = store
        self.app_id = app_id
        # One channel per session table: two stores in one database stay apart.
        self.channel = f"{store.table}_events"
        self.values_retention = values_retention
        self._receiver: Receiver | None = None
        self._schema = False
        self._sent_by_ref = 0

    def publish(self, data: bytes) -> None:
        if len(data) <= _PAYLOAD_LIMIT and b'"fields"' not in data:
            payload = data.decode("utf-8")
            self._store._run(q.PG_NOTIFY, {"channel": self.channel, "payload": payload}, _nothing)
            return
        if not self._schema:
            self._store._run(q.PG_EVENT_VALUES_SCHEMA, {}, _nothing)
            self._schema = True
        self._store._run(q.PG_NOTIFY_BY_REF, {"channel": self.channel, "data": data}, _nothing)
        self._sent_by_ref += 1
        if self._sent_by_ref % _PRUNE_EVERY == 0:
            self._store._run(q.PG_EVENT_VALUES_PRUNE, {"max_age": self.values_retention}, _nothing)

    def start(self, deliver: Deliver) -> None:
        if self._receiver is not None:
            return
        listening = threading.Event()

        def session(stop: threading.Event) -> None:
            store = self._store
            with psycopg.connect(
                store.conninfo, autocommit=True, **store._connect_kwargs
            ) as conn:
                conn.execute(f'LISTEN "{self.channel}"')
                listening.set()
                while not stop.is_set():
                    # Read the batch first: the connection is busy while the
                    # notifies() generator runs, and a reference is read back
                    # on this same connection.
                    for payload in [n.payload for n in conn.notifies(timeout=0.2, stop_after=1)]:
                        data = _resolve(conn, payload)
                        if data is not None:
                            deliver(data)

        self._receiver = Receiver(f"postgresql:{self.channel}", session)
        listening.wait(2.0)

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None


def _nothing(cur: Any) -> None:
    return None


def _resolve(conn: psycopg.Connection[Any], payload: str) -> bytes | None:
    """The encoded event of a payload: inline, or read back by reference.

    None when the referenced row was pruned already: the hub then counts the
    sender's sequence gap as missed.
    """
    if not payload.startswith("@"):
        return payload.encode("utf-8")
    try:
        ref = int(payload[1:])
    except ValueError:
        return None
    row = conn.execute(q.PG_EVENT_VALUES_FETCH, {"id": ref}).fetchone()
    return bytes(row[0]) if row is not None else None
