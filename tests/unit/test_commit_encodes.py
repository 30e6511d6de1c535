"""What a commit encodes: in-place edits are found, immutable values are not encoded again.

Issue 11: at commit the session re-encodes the values the request read or
wrote to find in-place edits (``session.setdefault("cart", []).append(x)``).
A value of an immutable built-in type cannot have been edited, so encoding
it again is wasted work; a mutable one still is compared.
"""

from __future__ import annotations

from typing import Any

from shoal import ManualClock, SessionManager
from shoal.codec import JsonCodec


class CountingCodec(JsonCodec):
    """The JSON codec, counting the values it encodes by type name."""

    def __init__(self) -> None:
        super().__init__()
        self.encoded: list[str] = []

    def dumps(self, value: Any) -> bytes:
        self.encoded.append(type(value).__name__)
        return super().dumps(value)


def manager(codec: CountingCodec) -> SessionManager:
    return SessionManager("memory://", codec=codec, clock=ManualClock(start=1_700_000_000.0))


def test_an_immutable_value_read_or_written_is_encoded_once_at_set_only() -> None:
    codec = CountingCodec()
    made = manager(codec)
    with made.open() as session:
        session["visits"], session["name"], session["ratio"] = 1, "ann", 0.5
    sid = session.id
    codec.encoded.clear()
    with made.open(sid) as session:
        assert session["name"] == "ann" and session["ratio"] == 0.5  # read
        session["visits"] = 2  # written
    assert codec.encoded == ["int"]  # the set's encode, none at commit
    with made.open(sid) as session:
        assert session["visits"] == 2


def test_a_list_edited_in_place_after_set_is_still_saved() -> None:
    codec = CountingCodec()
    made = manager(codec)
    with made.open() as session:
        session.setdefault("cart", []).append("apple")
        session["user"] = "ann"
    with made.open(session.id) as again:
        assert again["cart"] == ["apple"] and again["user"] == "ann"
        again["cart"].append("pear")  # read, then edited in place
    with made.open(session.id) as third:
        assert third["cart"] == ["apple", "pear"]
