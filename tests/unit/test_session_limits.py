"""``max_session_bytes`` and ``max_keys``: refused at ``set``, naming the key and the limit.

The size of a session is what the store keeps: every key (UTF-8) plus its
encoded value, shoal's own keys (flashes, tokens) included. The session
keeps a running total, so a ``set`` costs the same whatever the session
holds; the total follows replaced, deleted, expired and invalidated keys.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from shoal import ConfigError, EncodeError, ManualClock, Session, SessionManager

MiB = 1024 * 1024
NOW = 1_700_000_000.0


def manager(**kw: Any) -> SessionManager:
    kw.setdefault("clock", ManualClock(start=NOW))
    return SessionManager("memory://", **kw)


def stored_size(session: Session) -> int:
    """The size recomputed from scratch, to check the running total against."""
    fields = session._encoded_fields()
    return sum(len(key.encode("utf-8")) + len(value) for key, value in fields.items())


def test_the_defaults_are_one_mib_and_a_thousand_keys() -> None:
    made = manager()
    assert made.max_session_bytes == MiB and made.max_keys == 1000


def test_a_set_over_max_session_bytes_names_the_key_and_the_limit() -> None:
    with manager().open() as session:
        session["user"] = "ann"
        with pytest.raises(EncodeError) as caught:
            session["cart"] = "x" * int(1.2 * MiB)
        assert isinstance(caught.value, TypeError) and caught.value.key == "cart"
        assert str(caught.value).startswith(
            "session key 'cart' cannot be stored: the session would be 1.2 MiB "
        )
        assert "over max_session_bytes=1048576 (1.0 MiB)" in str(caught.value)
        assert "max_session_bytes" in caught.value.reason
        assert "cart" not in session and dict(session) == {"user": "ann"}
    assert session.id  # the rest of the session was saved


@pytest.mark.parametrize(
    ("extra", "fits"),
    [
        pytest.param(0, True, id="exactly-the-limit"),
        pytest.param(1, False, id="one-byte-over"),
    ],
)
def test_the_limit_is_inclusive(extra: int, fits: bool) -> None:
    budget = 2000
    with manager(max_session_bytes=budget).open() as session:
        session["a"] = "x" * 100
        session["b"] = ""
        room = budget - stored_size(session)
        value = "y" * (room + extra)  # the encoded "" already counts the quotes
        if fits:
            session["b"] = value
            assert stored_size(session) == budget
        else:
            with pytest.raises(EncodeError, match="session key 'b'.*max_session_bytes=2000"):
                session["b"] = value


def test_a_key_over_max_keys_is_refused_and_replacing_a_key_is_not() -> None:
    with manager(max_keys=3).open() as session:
        session.update(a=1, b=2, c=3)
        with pytest.raises(
            EncodeError,
            match=r"^session key 'd' cannot be stored: the session would have 4 keys, "
            r"over max_keys=3",
        ):
            session["d"] = 4
        session["a"] = 10  # a replaced key is not a new one
        del session["b"]
        session["d"] = 4  # the deleted one made room
        assert dict(session) == {"a": 10, "c": 3, "d": 4}


@pytest.mark.parametrize(
    "free",
    [
        pytest.param(lambda s: s.__setitem__("big", "small"), id="replaced-smaller"),
        pytest.param(lambda s: s.__delitem__("big"), id="deleted"),
        pytest.param(lambda s: s.pop("big"), id="popped"),
        pytest.param(lambda s: s.invalidate(), id="invalidated"),
    ],
)
def test_space_freed_by_a_change_can_be_used_again(free: Any) -> None:
    with manager(max_session_bytes=10_000).open() as session:
        session["big"] = "x" * 6000
        with pytest.raises(EncodeError):
            session["more"] = "y" * 6000
        free(session)
        session["more"] = "y" * 6000
        assert stored_size(session) <= 10_000


def test_an_expired_key_frees_its_space() -> None:
    clock = ManualClock(start=NOW)
    with manager(max_session_bytes=10_000, clock=clock).open() as session:
        session.set("big", "x" * 6000, ttl=60)
        clock.advance(61)
        assert "big" not in session
        session["more"] = "y" * 6000


def test_flashes_count_and_the_error_names_the_flash() -> None:
    with manager(max_session_bytes=4000).open() as session:
        session.flash("x" * 1000)
        with pytest.raises(EncodeError, match=r"^flash message cannot be stored: .*4000"):
            session.flash("y" * 3500)


def test_the_running_total_follows_every_change() -> None:
    clock = ManualClock(start=NOW)
    rng = random.Random(14)
    with manager(clock=clock).open() as session:
        for step in range(600):
            key = f"k{rng.randrange(12)}é"  # non-ASCII keys count in UTF-8 bytes
            action = rng.randrange(6)
            if action == 0 and key in session:
                del session[key]
            elif action == 1:
                session.set(key, "v" * rng.randrange(50), ttl=rng.choice([None, 5.0]))
            elif action == 2:
                clock.advance(rng.choice([0, 3]))
                list(session)
            elif action == 3:
                session.flash(step)
            elif action == 4 and rng.random() < 0.05:
                session.invalidate()
            else:
                session.pop_flashes()
            assert session._encoded.size == stored_size(session), step


def test_a_session_over_a_lowered_limit_can_still_shrink_but_not_grow() -> None:
    big = manager()
    with big.open() as session:
        session.update(a="x" * 5000, b="y" * 5000)
    small = SessionManager(big.store, clock=big.clock, max_session_bytes=4000)
    with small.open(session.id) as loaded:
        assert loaded["a"] == "x" * 5000  # still readable
        del loaded["a"]  # shrinking is allowed, though still over
        loaded["b"] = "y" * 4500
        with pytest.raises(EncodeError, match="session key 'b'"):
            loaded["b"] = "y" * 4600
        with pytest.raises(EncodeError, match="session key 'c'"):
            loaded["c"] = 1


def test_an_in_place_edit_over_the_limit_fails_the_commit_naming_the_key() -> None:
    made = manager(max_session_bytes=10_000)
    with made.open() as session:
        session["items"] = []
    with pytest.raises(EncodeError, match="session key 'items'.*max_session_bytes=10000"):
        with made.open(session.id) as edited:
            edited["items"].extend(["x" * 100] * 200)
    with made.open(session.id, read_only=True) as after:
        assert after["items"] == []  # nothing was saved


def test_none_turns_the_limits_off() -> None:
    with manager(max_session_bytes=None, max_keys=None).open() as session:
        session["cart"] = "x" * (2 * MiB)
        session.update({f"k{i}": i for i in range(1500)})
    assert len(session) == 1501


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        pytest.param({"max_session_bytes": 0}, r"max_session_bytes=0.*>= 1", id="bytes-zero"),
        pytest.param({"max_session_bytes": -1}, "max_session_bytes=-1", id="bytes-negative"),
        pytest.param({"max_session_bytes": "1048576"}, r"max_session_bytes='1048576'.*int",
                     id="bytes-str"),
        pytest.param({"max_session_bytes": 1.5 * MiB}, r"max_session_bytes=1572864\.0.*int",
                     id="bytes-float"),
        pytest.param({"max_session_bytes": True}, "max_session_bytes=True", id="bytes-bool"),
        pytest.param({"max_keys": 0}, r"max_keys=0.*>= 1", id="keys-zero"),
        pytest.param({"max_keys": "10"}, r"max_keys='10'.*int", id="keys-str"),
        pytest.param({"max_keys": False}, "max_keys=False", id="keys-bool"),
    ],
)
def test_bad_limits_are_config_errors(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        manager(**kw)
