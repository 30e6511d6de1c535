"""Sealing: authenticated encryption of small blobs with rotating keys.

``Sealer.seal(data, context)`` encrypts and authenticates ``data`` with
AES-256-GCM and returns base64url text (no padding) fit for a cookie;
``Sealer.open(text, context)`` gives the data back, or ``None`` for anything
it did not seal itself under that ``context``: foreign, tampered, truncated,
sealed under a key no longer listed, or bound to another context. Openers
never raise on bad input, so a forged cookie can never become a 500.

Wire format (all of it authenticated; the header is part of the associated
data, so no bit of it can be changed)::

    byte 0      format version (1)
    byte 1      flags: bit 0 = the plaintext is raw DEFLATE (RFC 1951)
    bytes 2-5   key id: first 4 bytes of SHA-256 over the derived key
    bytes 6-17  96-bit random nonce
    rest        AES-GCM ciphertext and 16-byte tag

Keys: every configured secret (newest first) is stretched to a 256-bit key
with HKDF-SHA256 whose ``info`` names the purpose, so the same secret used
for another purpose elsewhere yields an unrelated key. The newest key seals;
every listed key opens, picked by its key id rather than by trying each, so
rotating keys (prepend a new one, drop the oldest later) logs no one out.

Nonces are random: NIST SP 800-38D bounds random-nonce GCM at 2**32 seals
per key; rotate keys well before that (see docs/replica.md). The rejected
alternative, a counter nonce, needs state shared by every process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ConfigError

__all__ = [
    "MIN_DISTINCT", "MIN_SECRET_LENGTH", "Sealer", "Secret", "check_secret", "check_secret_keys",
]

FORMAT: Final = 1
_FLAG_DEFLATE: Final = 0x01
_HEADER: Final = struct.Struct(">BB4s12s")
_TAG_BYTES: Final = 16
MIN_SECRET_LENGTH: Final = 32
"""Shortest secret accepted: HKDF does not stretch a weak password."""
MIN_DISTINCT: Final = 8
"""Fewest distinct characters (bytes) in a secret: ``"x" * 40`` is no key."""


class Secret:
    """A secret (text or bytes) that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes | Secret) -> None:
        self._value = value.reveal() if isinstance(value, Secret) else value

    def reveal(self) -> str | bytes:
        """The secret itself; call only where a key is derived."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self._value)


_MAKE_ONE: Final = (
    'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
)


def check_secret(key: object, position: int) -> Secret:
    """``key`` as a ``Secret``, or a ``ConfigError`` that names its position, never its value.

    A key is a ``str`` of at least ``MIN_SECRET_LENGTH`` characters or ``bytes``
    of at least as many bytes (``os.urandom(32)``), not whitespace only, with
    at least ``MIN_DISTINCT`` distinct characters (bytes): HKDF stretches no
    weak secret, and ``"x" * 40`` is one guess. Rejected: an entropy estimate,
    which a pattern such as ``"abcd" * 8`` passes; the rule only catches the
    obvious, and the fix is always a generated key.
    """
    value = key.reveal() if isinstance(key, Secret) else key
    what = f"secret key #{position}"
    if not isinstance(value, str | bytes):
        name = type(value).__name__
        kind = "None" if value is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
        raise ConfigError(f"{what} is {kind}; each key is a str or bytes; {_MAKE_ONE}")
    unit = "characters" if isinstance(value, str) else "bytes"
    if not value:
        raise ConfigError(f"{what} is empty; {_MAKE_ONE}")
    if not value.strip():
        raise ConfigError(f"{what} is whitespace only; {_MAKE_ONE}")
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{what} is {len(value)} {unit}; use at least {MIN_SECRET_LENGTH}; {_MAKE_ONE}"
        )
    distinct = len(set(value))
    if distinct < MIN_DISTINCT:
        single = "character" if isinstance(value, str) else "byte"
        raise ConfigError(
            f"{what} has {distinct} distinct {single if distinct == 1 else unit} in "
            f"{len(value)}, so it is no random key; {_MAKE_ONE}"
        )
    return key if isinstance(key, Secret) else Secret(value)


def check_secret_keys(secret_keys: object) -> list[Secret]:
    """Every key of ``secret_keys`` checked (``check_secret``), newest first."""
    if isinstance(secret_keys, str | bytes | Secret):
        raise ConfigError("secret_keys is a list of keys, newest first: write secret_keys=[key]")
    if not isinstance(secret_keys, Iterable):
        raise ConfigError(
            f"secret_keys is a {type(secret_keys).__name__}; pass a list of keys, newest first"
        )
    secrets = [check_secret(key, n) for n, key in enumerate(secret_keys, start=1)]
    if not secrets:
        raise ConfigError(
            "secret_keys is empty: pass at least one key (newest first), "
            "e.g. from SHOAL_SECRET_KEYS"
        )
    return secrets


def _derive(secret: Secret, purpose: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose)
    value = secret.reveal()
    # A str key is its UTF-8 bytes, so the same key as str or bytes is one key.
    return hkdf.derive(value.encode("utf-8") if isinstance(value, str) else value)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict base64url: a character outside the alphabet is an error, not skipped."""
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)


class Sealer:
    """Seals with the newest of ``secret_keys`` and opens with any of them.

    ``purpose`` goes into the key derivation; ``max_plain`` bounds what
    ``open`` will decompress (a guard, since only holders of a key can seal).
    """

    def __init__(
        self,
        secret_keys: Sequence[str | bytes | Secret],
        *,
        purpose: str = "shoal replica",
        max_plain: int = 1 << 20,
    ) -> None:
        secrets = check_secret_keys(secret_keys)
        self.max_plain = max_plain
        label = purpose.encode("utf-8")
        self._keys: dict[bytes, list[AESGCM]] = {}
        newest: tuple[bytes, AESGCM] | None = None
        for secret in secrets:
            derived = _derive(secret, label)
            key_id = hashlib.sha256(derived).digest()[:4]
            aead = AESGCM(derived)
            # Two keys with the same 32-bit id are both tried (chance 2**-32).
            self._keys.setdefault(key_id, []).append(aead)
            if newest is None:
                newest = (key_id, aead)
        assert newest is not None
        self._seal_id, self._seal_key = newest

    def __repr__(self) -> str:
        count = sum(len(keys) for keys in self._keys.values())
        return f"<Sealer {count} key{'s' if count != 1 else ''}>"

    def seal(self, data: bytes, context: bytes) -> str:
        """``data`` encrypted and bound to ``context``, as base64url text."""
        flags = 0
        # Raw DEFLATE with a 4 KiB window: a cookie-sized input needs no
        # more, and the default 32 KiB window makes a small compress 4x
        # slower (zlib allocates and clears it on every call).
        deflater = zlib.compressobj(6, zlib.DEFLATED, -12, 5)
        compressed = deflater.compress(data) + deflater.flush()
        if len(compressed) < len(data):
            data, flags = compressed, _FLAG_DEFLATE
        nonce = os.urandom(12)
        header = _HEADER.pack(FORMAT, flags, self._seal_id, nonce)
        sealed = self._seal_key.encrypt(nonce, data, header + context)
        return _b64encode(header + sealed)

    def open(self, text: str, context: bytes) -> bytes | None:
        """The data sealed as ``text`` under ``context``; ``None`` if anything is off."""
        try:
            raw = _b64decode(text)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return None
        if len(raw) < _HEADER.size + _TAG_BYTES:
            return None
        fmt, flags, key_id, nonce = _HEADER.unpack_from(raw, 0)
        if fmt != FORMAT or flags & ~_FLAG_DEFLATE:
            return None
        header, sealed = raw[: _HEADER.size], raw[_HEADER.size :]
        for aead in self._keys.get(key_id, ()):
            try:
                data = aead.decrypt(nonce, sealed, header + context)
            except InvalidTag:
                continue
            return self._inflate(data) if flags & _FLAG_DEFLATE else data
        return None

    def _inflate(self, data: bytes) -> bytes | None:
        inflater = zlib.decompressobj(-15)  # raw DEFLATE, any window up to 32 KiB
        try:
            plain = inflater.decompress(data, self.max_plain)
        except zlib.error:
            return None
        if inflater.unconsumed_tail or not inflater.eof:
            return None  # larger than max_plain, or cut short
        return plain
