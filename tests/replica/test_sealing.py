"""Sealing: AES-256-GCM with key ids, rotation, compression; bad input opens to None."""

from __future__ import annotations

import base64
import os
import zlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal import ConfigError
from shoal.sealing import Sealer, Secret

from ._apps import NEW_KEY, OLD_KEY, OTHER_KEY

CONTEXT = b"app\x00id-hash\x007"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_round_trip_is_base64url_without_padding() -> None:
    sealer = Sealer([NEW_KEY])
    sealed = sealer.seal(b"hello", CONTEXT)
    assert set(sealed) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert sealer.open(sealed, CONTEXT) == b"hello"
    assert sealer.seal(b"hello", CONTEXT) != sealed, "a fresh nonce every time"


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=4096), context=st.binary(max_size=64))
def test_any_bytes_round_trip(data: bytes, context: bytes) -> None:
    sealer = Sealer([NEW_KEY])
    assert sealer.open(sealer.seal(data, context), context) == data


def test_rotation_newest_seals_every_listed_key_opens() -> None:
    old = Sealer([OLD_KEY])
    rotated = Sealer([NEW_KEY, OLD_KEY])
    new_only = Sealer([NEW_KEY])
    from_old = old.seal(b"before rotation", CONTEXT)
    assert rotated.open(from_old, CONTEXT) == b"before rotation"
    from_rotated = rotated.seal(b"after rotation", CONTEXT)
    assert new_only.open(from_rotated, CONTEXT) == b"after rotation", "sealed with the newest"
    assert old.open(from_rotated, CONTEXT) is None
    assert new_only.open(from_old, CONTEXT) is None, "a dropped key opens nothing any more"
    # The key id is in the header: bytes 2-5, equal for every seal with one key.
    assert unb64(from_rotated)[2:6] == unb64(new_only.seal(b"x", CONTEXT))[2:6]
    assert unb64(from_old)[2:6] != unb64(from_rotated)[2:6]


def test_keys_are_bound_to_their_purpose() -> None:
    sealed = Sealer([NEW_KEY], purpose="shoal replica").seal(b"x", CONTEXT)
    assert Sealer([NEW_KEY], purpose="something else").open(sealed, CONTEXT) is None


def test_compression_only_when_it_helps() -> None:
    sealer = Sealer([NEW_KEY])
    repetitive = b"abc" * 1000
    sealed = sealer.seal(repetitive, CONTEXT)
    assert unb64(sealed)[1] == 1 and len(sealed) < 200
    noise = os.urandom(1000)
    assert unb64(sealer.seal(noise, CONTEXT))[1] == 0
    assert sealer.open(sealed, CONTEXT) == repetitive


def _mutations(sealed: str) -> dict[str, str]:
    raw = unb64(sealed)

    def flip(index: int) -> str:
        changed = bytearray(raw)
        changed[index] ^= 0x01
        return b64(bytes(changed))

    return {
        "format": flip(0),
        "flags": flip(1),
        "key-id": flip(3),
        "nonce": flip(10),
        "ciphertext": flip(20),
        "tag": flip(len(raw) - 1),
        "truncated": b64(raw[:-1]),
        "header-only": b64(raw[:18]),
        "extended": b64(raw + b"\x00"),
        "empty": "",
        "not-base64": sealed[:10] + "!*" + sealed[12:],
        "padding": sealed + "==",
        "non-ascii": "é" + sealed[1:],
        "huge": "A" * 100_000,
    }


@pytest.mark.parametrize("name", sorted(_mutations(Sealer([NEW_KEY]).seal(b"x" * 50, b""))))
def test_tampered_input_opens_to_none(name: str) -> None:
    sealer = Sealer([NEW_KEY])
    sealed = sealer.seal(b"secret payload" * 4, CONTEXT)
    assert sealer.open(sealed, CONTEXT) is not None
    assert sealer.open(_mutations(sealed)[name], CONTEXT) is None


def test_foreign_key_and_other_context_open_to_none() -> None:
    sealed = Sealer([NEW_KEY]).seal(b"payload", CONTEXT)
    assert Sealer([OTHER_KEY]).open(sealed, CONTEXT) is None
    assert Sealer([NEW_KEY]).open(sealed, CONTEXT + b"x") is None
    assert Sealer([NEW_KEY]).open(sealed, b"") is None


def test_a_blob_that_inflates_beyond_the_limit_is_refused() -> None:
    """Built by hand with the real key: only a key holder could; still bounded."""
    from shoal.sealing import _HEADER, _derive

    key = _derive(Secret(NEW_KEY), b"shoal replica")
    import hashlib

    key_id = hashlib.sha256(key).digest()[:4]
    nonce = os.urandom(12)
    header = _HEADER.pack(1, 1, key_id, nonce)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = deflater.compress(b"\x00" * (2 << 20)) + deflater.flush()
    sealed = b64(header + AESGCM(key).encrypt(nonce, bomb, header + CONTEXT))
    assert Sealer([NEW_KEY], max_plain=1 << 20).open(sealed, CONTEXT) is None
    assert Sealer([NEW_KEY], max_plain=4 << 20).open(sealed, CONTEXT) == b"\x00" * (2 << 20)


def test_secrets_never_show() -> None:
    secret = Secret(NEW_KEY)
    sealer = Sealer([secret, OLD_KEY])
    for text in (repr(secret), str(secret), repr(sealer), f"{secret}"):
        assert NEW_KEY not in text and OLD_KEY not in text
    assert repr(sealer) == "<Sealer 2 keys>"


@pytest.mark.parametrize(
    "keys, fix",
    [
        pytest.param([], "at least one key", id="empty"),
        pytest.param(NEW_KEY, "secret_keys=[key]", id="a-string-not-a-list"),
        pytest.param(["short"], "token_urlsafe", id="short"),
        pytest.param([NEW_KEY, "x" * 31], "#2", id="second-short"),
    ],
)
def test_bad_keys_are_config_errors_naming_the_fix(keys: object, fix: str) -> None:
    with pytest.raises(ConfigError, match=fix.replace("[", r"\[").replace("]", r"\]")) as info:
        Sealer(keys)  # type: ignore[arg-type]
    assert NEW_KEY not in str(info.value) and "x" * 31 not in str(info.value)
