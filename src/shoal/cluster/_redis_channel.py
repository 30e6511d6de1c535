"""Redis's event channel: classic pub/sub on ``<prefix>events:<app_id>``.

Classic ``PUBLISH`` is broadcast to every node of a Cluster, so one
subscription on any node hears every publisher; Sentinel clients follow the
master. The subscriber is its own connection on a listener thread that
reconnects by itself. Rejected: keyspace notifications (off by default, not
propagated across a Cluster, lost on restart) and streams (per-shard in a
Cluster, and retention to manage).
"""

from __future__ import annotations

import threading
from typing import Any

from ._receiver import Receiver
from .channels import Deliver

__all__ = ["RedisChannel"]


class RedisChannel:
    """Pub/sub through the store's own client (``RedisStore``)."""

    name = "redis pub/sub"

    def __init__(self, store: Any, app_id: str) -> None:
        self._store = store
        self.channel = f"{store.prefix}events:{app_id}"
        self._receiver: Receiver | None = None

    def publish(self, data: bytes) -> None:
        client: Any = self._store._conn()[0]
        self._store._call(lambda: client.publish(self.channel, data))

    def start(self, deliver: Deliver) -> None:
        if self._receiver is not None:
            return
        subscribed = threading.Event()

        def session(stop: threading.Event) -> None:
            pubsub = self._store._pubsub_for(self.channel)
            try:
                pubsub.subscribe(self.channel)
                while not stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        subscribed.set()
                    elif message["type"] == "message":
                        deliver(bytes(message["data"]))
            finally:
                pubsub.close()

        self._receiver = Receiver(f"redis:{self.channel}", session)
        # Events published before the SUBSCRIBE is acknowledged are not seen:
        # wait (bounded) so a manager's first request is already covered.
        subscribed.wait(2.0)

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
