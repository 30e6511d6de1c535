"""Scale: bytes per session in Redis (``MEMORY USAGE``) with many sessions stored.

``sessions`` sessions of the benchmark's ~500-byte session are stored through
shoal (the first through ``SessionManager``, the rest by ``store.create`` of
the same encoded fields, to fill the server quickly). Reported: the payload
(every key and encoded value, what the application stored), ``MEMORY USAGE``
of a sample of records (the hash, its key and its expiry, as Redis counts
them), and the server's ``used_memory`` growth per session (allocator
overhead included). Target: ``MEMORY USAGE`` <= payload + 150 B.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from benchmarks._timing import SESSION
from shoal import SessionManager
from shoal.stores import open_store
from shoal.stores.base import NewRecord, RecordKey

__all__ = ["ScaleResult", "run_scale"]


@dataclass
class ScaleResult:
    sessions: int
    payload: int
    memory_usage: float
    used_memory_per_session: float


def run_scale(url: str, sessions: int) -> ScaleResult:
    import redis

    client: Any = redis.Redis.from_url(url)
    store = open_store(url + ("&" if "?" in url else "?") + "prefix=scale:")
    try:
        manager = SessionManager(store, app_id="scale")
        with manager.open() as session:
            session.update(SESSION)
        fields = dict(session._encoded_fields())
        payload = sum(len(k.encode()) + len(v) for k, v in fields.items())
        now = manager.clock()
        record = NewRecord(created=now, expires=now + 1800, absolute_expires=now + 86400,
                           fields=fields)  # fmt: skip
        before = int(client.info("memory")["used_memory"])
        rng = random.Random(11)
        for _ in range(sessions - 1):
            store.create(RecordKey("scale", f"{rng.getrandbits(256):064x}"), record, now=now)
        after = int(client.info("memory")["used_memory"])
        keys = [k for _, k in zip(range(200), client.scan_iter(match="scale:*", count=1000))]
        usage = [int(client.memory_usage(k, samples=0)) for k in keys]
        return ScaleResult(sessions, payload, sum(usage) / len(usage),
                           (after - before) / max(1, sessions - 1))  # fmt: skip
    finally:
        for batch in _batches(client.scan_iter(match="scale:*", count=1000), 1000):
            client.delete(*batch)
        store.close()
        client.close()


def _batches(it: Any, n: int) -> Any:
    batch: list[Any] = []
    for item in it:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
