"""The replica blob and its cookies, without a server: binding, expiry, chunks, sizes."""

from __future__ import annotations

import logging
import os

import pytest

from shoal import CookieOptions
from shoal.codec import JsonCodec, encode_field
from shoal.ids import hash_id, new_id
from shoal.replica import Replicator, wire_gen
from shoal.stores.state import StoredRecord
from shoal.stores.base import RecordKey
from shoal.transports import (
    COOKIE_BUDGET,
    join_chunks,
    replica_chunk_names,
    replica_set_cookies,
    split_chunks,
)

from ._apps import NEW_KEY, OLD_KEY, OTHER_KEY

NOW = 1_700_000_000.0
CODEC = JsonCodec()


def replicator(
    app_id: str = "app", keys: list[str] | None = None, max_bytes: int = 6144
) -> Replicator:
    return Replicator(
        app_id=app_id, secret_keys=keys or [NEW_KEY], max_bytes=max_bytes, idle_timeout=1800
    )


def record(**values: object) -> StoredRecord:
    fields = {key: encode_field(CODEC, key, value) for key, value in values.items()}
    return StoredRecord(
        version=3, created=NOW - 100, accessed=NOW, expires=NOW + 1800,
        absolute_expires=NOW + 86400, fields=fields, field_versions={k: 3 for k in fields},
    )


def key_for(session_id: str, app_id: str = "app") -> RecordKey:
    return RecordKey(app_id, hash_id(session_id))


def test_round_trip_keeps_times_and_fields() -> None:
    rep, key = replicator(), key_for(new_id())
    rec = record(user="ada", cart=[1, 2])
    wire = rep.seal(key, rec, gen=5, now=NOW)
    assert wire is not None and wire_gen(wire) == 5
    opened = rep.open(key, wire, NOW)
    assert opened is not None
    gen, back = opened
    assert gen == 5 and back.fields == rec.fields
    assert (back.created, back.accessed, back.expires, back.absolute_expires) == (
        rec.created, rec.accessed, rec.expires, rec.absolute_expires
    )


def test_tokens_and_expired_keys_stay_out() -> None:
    rep, key = replicator(), key_for(new_id())
    rec = record(user="ada")
    rec.fields["_shoal.token.buy.abc"] = encode_field(CODEC, "t", {"h": "x"})
    rec.fields["auth"] = encode_field(CODEC, "auth", "yes", expires=NOW - 1)
    wire = rep.seal(key, rec, gen=1, now=NOW)
    assert wire is not None
    opened = rep.open(key, wire, NOW)
    assert opened is not None and set(opened[1].fields) == {"user"}


@pytest.mark.parametrize(
    "case",
    ["other-session", "other-app", "foreign-key", "gen-raised", "gen-lowered", "no-gen",
     "expired-idle", "expired-absolute"],
)
def test_a_replica_opens_only_where_and_when_it_belongs(case: str) -> None:
    session_id = new_id()
    rep, key = replicator(), key_for(session_id)
    wire = rep.seal(key, record(user="ada"), gen=7, now=NOW)
    assert wire is not None
    opener, open_key, now = rep, key, NOW
    if case == "other-session":
        open_key = key_for(new_id())
    elif case == "other-app":
        opener, open_key = replicator("other"), key_for(session_id, "other")
    elif case == "foreign-key":
        opener = replicator(keys=[OTHER_KEY])
    elif case == "gen-raised":
        wire = "8" + wire[1:]
    elif case == "gen-lowered":
        wire = "6" + wire[1:]
    elif case == "no-gen":
        wire = wire.partition(".")[2]
    elif case == "expired-idle":
        now = NOW + 1800
    elif case == "expired-absolute":
        now = NOW + 86400
    assert opener.open(open_key, wire, now) is None
    stats = opener.stats
    assert stats.rejected + stats.expired == 1


def test_rotated_keys_open_old_replicas() -> None:
    key = key_for(new_id())
    wire = replicator(keys=[OLD_KEY]).seal(key, record(a=1), gen=1, now=NOW)
    assert wire is not None
    assert replicator(keys=[NEW_KEY, OLD_KEY]).open(key, wire, NOW) is not None
    assert replicator(keys=[NEW_KEY]).open(key, wire, NOW) is None


def test_over_the_cap_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    rep, key = replicator(max_bytes=1000), key_for(new_id())
    with caplog.at_level(logging.WARNING, logger="shoal"):
        assert rep.seal(key, record(blob=os.urandom(2000).hex()), gen=1, now=NOW) is None
    assert rep.stats.skipped_too_large == 1 and rep.stats.sealed == 0
    [message] = [r.getMessage() for r in caplog.records]
    assert "replica_max_bytes=1000" in message and key.id_hash not in message


def _cookies_of(pairs: list[tuple[str, str]]) -> dict[str, str]:
    return dict(pairs)


WIRE = "12." + "A" * 9000


def test_chunks_join_back() -> None:
    pairs = split_chunks(WIRE, "shoal", 3800)
    assert [name for name, _ in pairs] == ["shoal_r0", "shoal_r1", "shoal_r2"]
    assert all(len(value) <= 3800 for _, value in pairs)
    assert join_chunks(_cookies_of(pairs), "shoal") == WIRE
    assert replica_chunk_names(_cookies_of(pairs), "shoal") == ["shoal_r0", "shoal_r1", "shoal_r2"]


@pytest.mark.parametrize("case", ["reordered", "missing", "extra-data", "count", "no-header",
                                  "other-replica-chunk"])
def test_inconsistent_chunks_are_refused(case: str) -> None:
    wire = "12." + "".join(chr(65 + i % 26) for i in range(9000))
    cookies = _cookies_of(split_chunks(wire, "shoal", 3800))
    if case == "reordered":
        cookies["shoal_r1"], cookies["shoal_r2"] = cookies["shoal_r2"], cookies["shoal_r1"]
    elif case == "missing":
        del cookies["shoal_r1"]
    elif case == "extra-data":
        cookies["shoal_r2"] += "A"
    elif case == "count":
        cookies["shoal_r0"] = "99" + cookies["shoal_r0"][1:]
    elif case == "no-header":
        cookies["shoal_r0"] = cookies["shoal_r0"].split(".", 2)[2]
    elif case == "other-replica-chunk":
        other = _cookies_of(split_chunks("13." + "B" * 9000, "shoal", 3800))
        cookies["shoal_r1"] = other["shoal_r1"]
    assert join_chunks(cookies, "shoal") is None


@pytest.mark.parametrize("https", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        CookieOptions(),
        CookieOptions(name="a_much_longer_session_cookie_name", domain=".sub.example.com",
                      path="/some/application/path", secure=True, samesite="None",
                      partitioned=True, max_age=31_536_000),
    ],
    ids=["default", "every-attribute"],
)
def test_every_set_cookie_fits_the_budget(options: CookieOptions, https: bool) -> None:
    headers = replica_set_cookies(options, "1." + "x" * 20000, False, [], https=https)
    assert len(headers) == 6
    assert all(len(header) <= COOKIE_BUDGET for header in headers)
    cookies = {h.split("=", 1)[0]: h.split("=", 1)[1].split(";")[0] for h in headers}
    assert join_chunks(cookies, options.name) == "1." + "x" * 20000


def test_a_shrinking_replica_clears_the_chunks_it_no_longer_uses() -> None:
    options = CookieOptions()
    held = ["shoal_r0", "shoal_r1", "shoal_r2"]
    headers = replica_set_cookies(options, "1.small", False, held, https=False)
    assert headers[0].startswith("shoal_r0=1.")
    assert [h.split("=")[0] for h in headers[1:]] == ["shoal_r1", "shoal_r2"]
    assert all("Max-Age=0" in h for h in headers[1:])
    cleared = replica_set_cookies(options, None, True, held, https=False)
    assert len(cleared) == 3 and all("Max-Age=0" in h for h in cleared)
    assert replica_set_cookies(options, None, False, held, https=False) == []


def test_a_chunk_longer_than_any_shoal_sends_makes_the_replica_ignored() -> None:
    # A client can send chunks of any length; shoal's own never exceed the
    # cookie budget, so a longer one is refused before its digest is computed.
    wire = "12." + "A" * (4 * COOKIE_BUDGET)
    cookies = _cookies_of(split_chunks(wire, "shoal", 3800))
    assert join_chunks(cookies, "shoal") == wire
    big = _cookies_of(split_chunks(wire, "shoal", 2 * COOKIE_BUDGET))
    assert join_chunks(big, "shoal") is None


def test_a_replica_over_replica_max_bytes_is_rejected_without_unsealing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rep, key = replicator(max_bytes=1000), key_for(new_id())
    wire = replicator(max_bytes=65536).seal(key, record(blob=os.urandom(2000).hex()), gen=1, now=NOW)
    assert wire is not None and len(wire) > 1000

    def no_unsealing(text: str, context: bytes) -> bytes | None:
        raise AssertionError("an oversized replica reached the sealer")

    monkeypatch.setattr(rep.sealer, "open", no_unsealing)
    assert rep.open(key, wire, NOW) is None
    assert rep.stats.rejected == 1
