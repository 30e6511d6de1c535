"""Concurrent clients incrementing one session on a real multi-worker server.

``check_increments``: every client increments the same key (``serialized``
must keep them all). ``check_per_key_increments``: each client increments a
key of its own, sent in the ``X-Count-Key`` header (``merge`` must keep
them all, since concurrent writes to different keys never overwrite each
other). The counting apps are the ``*_app.py`` modules next to this one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import orjson

from ..processes._servers import get

COUNT_KEY_HEADER: Final = "X-Count-Key"


def count(
    port: int, cookie: str | None, key: str | None = None
) -> tuple[dict[str, Any], str | None]:
    """One ``GET /`` of a counting app (in ``key``, if given): its answer and the cookie it set."""
    answer = get(port, cookie, headers={COUNT_KEY_HEADER: key} if key is not None else None)
    assert answer.status == 200, (answer.status, answer.body)
    return orjson.loads(answer.body), answer.cookie


def check_increments(
    port: int, *, clients: int, increments: int
) -> tuple[dict[str, Any], str]:
    """``clients`` threads make ``increments`` requests each on one new session.

    Asserts that every increment saw a count of its own and that the final
    count is exact (nothing lost across processes); returns the last answer
    and the session's cookie (``name=value``).
    """
    first, cookie = count(port, None)
    assert cookie is not None and first["n"] == 1

    def client(_: int) -> list[int]:
        return [count(port, cookie)[0]["n"] for _ in range(increments)]

    with ThreadPoolExecutor(max_workers=clients) as pool:
        seen = [n for answers in pool.map(client, range(clients)) for n in answers]
    final, _ = count(port, cookie)
    total = 1 + clients * increments
    assert sorted(seen) == list(range(2, total + 1)), "each increment saw its own count"
    assert final["n"] == total + 1, "serialized: no increment lost across processes"
    return final, cookie


def check_per_key_increments(
    port: int, *, clients: int, increments: int
) -> tuple[dict[str, Any], set[int]]:
    """``clients`` threads, each incrementing its own key ``increments`` times, on one session.

    Asserts that each client saw its own key count 1, 2, ... in order (every
    request reads the newest record) and that every key ends at
    ``increments`` (no write to one key lost another's, across processes);
    returns the final session and the pids of the workers that answered.
    """
    first, cookie = count(port, None, "start")
    assert cookie is not None and first["n"] == 1

    def client(index: int) -> tuple[list[int], set[int]]:
        answers = [count(port, cookie, f"k{index}")[0] for _ in range(increments)]
        return [answer["n"] for answer in answers], {answer["pid"] for answer in answers}

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(client, range(clients)))
    final, _ = count(port, cookie, "start")
    expected = list(range(1, increments + 1))
    for index, (seen, _) in enumerate(results):
        assert seen == expected, (
            f"client {index}'s key went {seen[:8]}... to {seen[-1]}, not 1 to {increments}"
        )
    session = final["session"]
    assert {f"k{index}": session.get(f"k{index}") for index in range(clients)} == {
        f"k{index}": increments for index in range(clients)
    }, "merge: every key ends exact"
    assert session["start"] == 2
    return session, set().union(*(pids for _, pids in results))
