"""``ThreadedStore``: a sync store's calls awaited, off the loop, and a cancellation waits."""

from __future__ import annotations

import asyncio
import threading

from shoal.stores import open_async_store
from shoal.stores._threaded import ThreadedStore, run_in_thread
from shoal.stores.base import AsyncStore, LoadStatus, NewRecord, RecordKey

KEY = RecordKey("app", "a" * 64)


def test_every_call_reaches_the_sync_store() -> None:
    async def main() -> None:
        store = open_async_store("memory://")
        assert isinstance(store, AsyncStore)
        assert await store.create(KEY, NewRecord(0, 100, 200, {"x": b"1"}), now=1)
        loaded = await store.load(KEY, now=2)
        assert loaded.status is LoadStatus.LOADED and loaded.record is not None
        assert loaded.record.fields == {"x": b"1"}
        assert [info.key for info in await store.records("app")] == [KEY]
        assert await store.invalidate(KEY, now=3)
        assert (await store.load(KEY, now=4)).status is LoadStatus.INVALIDATED
        assert await store.purge(now=1000, grace=0) == 1
        await store.aclose()

    asyncio.run(main())


def test_the_call_runs_outside_the_loops_thread() -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        assert await run_in_thread(threading.get_ident) != loop_thread

    asyncio.run(main())


def test_a_cancelled_call_waits_for_its_thread_before_it_is_cancelled() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(10)
        finished.set()

    async def main() -> None:
        task = asyncio.ensure_future(run_in_thread(blocking))
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        await asyncio.sleep(0)  # the cancellation is delivered...
        assert not task.done()  # ...but the task still waits for the thread
        release.set()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the cancellation was swallowed")
        assert finished.is_set()

    asyncio.run(main())


def test_repr_names_the_wrapped_store() -> None:
    from shoal.stores.memory import MemoryStore

    assert "MemoryStore" in repr(ThreadedStore(MemoryStore()))
