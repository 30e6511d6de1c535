"""The async face of ``SessionManager``: what differs from the sync one, and why.

The semantics themselves are the manager contract suite's, run on both
paths (tests/contract/conftest.py). These tests pin the async API's own
rules: the load at ``abegin``, the loop guard on sync store calls, and one
data set for sync and async requests of one manager.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from shoal import SessionManager, SessionStateError


@pytest.fixture
def manager() -> SessionManager:
    return SessionManager("memory://", policy="merge")


def _start(manager: SessionManager) -> tuple[str, str]:
    """A stored session with ``n=1`` and a once-only token ``pay``: (id, token)."""
    with manager.open() as session:
        session["n"] = 1
        token = session.issue_token("pay")
    return session.id, token


def test_open_async_and_open_share_one_data_set(manager: SessionManager) -> None:
    sid, token = _start(manager)

    async def bump() -> int:
        async with manager.open_async(sid) as session:
            session["n"] += 1
            return int(session["n"])

    assert asyncio.run(bump()) == 2
    with manager.open(sid) as session:
        assert session["n"] == 2


def test_abegin_loads_at_once_so_lock_must_be_asked_for_up_front(
    manager: SessionManager,
) -> None:
    sid, token = _start(manager)

    async def scenario() -> None:
        session = await manager.abegin(sid)
        assert session.loaded, "loaded when abegin returned: no blocking __getitem__ later"
        with pytest.raises(SessionStateError, match="policy='serialized'"):
            session.lock()
        await manager.arollback(session)
        locked = await manager.abegin(sid, policy="serialized")
        await manager.acommit(locked)

    asyncio.run(scenario())


def test_a_session_without_an_id_costs_no_store_call_until_used(
    manager: SessionManager,
) -> None:
    async def scenario() -> None:
        session = await manager.abegin(None)
        assert not session.loaded
        outcome = await manager.acommit(session)
        assert outcome.send_id is None

    asyncio.run(scenario())
    assert list(manager.store.records()) == []


def test_a_blocking_call_on_the_loop_is_refused_with_the_awaitable_to_use(
    manager: SessionManager,
) -> None:
    sid, token = _start(manager)

    async def scenario() -> bool:
        async with manager.open_async(sid) as session:
            with pytest.raises(SessionStateError, match="aconsume_token"):
                session.consume_token("pay", token)
            return await session.aconsume_token("pay", token)

    assert asyncio.run(scenario()), "the awaited consume succeeds"


def test_a_sync_call_from_a_worker_thread_uses_the_sync_store(
    manager: SessionManager,
) -> None:
    """A sync FastAPI endpoint runs in a thread: its consume goes to the sync store."""
    sid, token = _start(manager)
    answers: list[bool] = []

    async def scenario() -> None:
        async with manager.open_async(sid) as session:
            worker = threading.Thread(
                target=lambda: answers.append(session.consume_token("pay", token))
            )
            worker.start()
            await asyncio.to_thread(worker.join, 10)

    asyncio.run(scenario())
    assert answers == [True]
    with manager.open(sid) as session:
        assert not session.consume_token("pay", token), "consumed once"


def test_a_sync_session_refuses_the_async_calls(manager: SessionManager) -> None:
    sid, token = _start(manager)
    session = manager.begin(sid)

    async def scenario() -> None:
        with pytest.raises(SessionStateError, match="abegin"):
            await manager.acommit(session)

    asyncio.run(scenario())
    manager.rollback(session)


def test_aclose_closes_the_async_twin_and_the_store(manager: SessionManager) -> None:
    sid, token = _start(manager)

    async def scenario() -> None:
        async with manager.open_async(sid) as session:
            assert session["n"] == 1
        await manager.aclose()

    asyncio.run(scenario())
    assert manager._astore is None
