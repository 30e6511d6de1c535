"""Rotation grace: the old id of a rotated session as a short-lived pointer to the new one.

After ``rotate()`` the old id's record is tombstoned at once, as before, so a
late save or a replica can never bring the pre-rotation session back. With a
grace (``rotation_grace``, 30 s by default) the manager also stores a small
*pointer* record that says "this id moved to that one", alive for the grace
only. Requests still in flight on the old id, and a client whose response
with the new Set-Cookie was lost, then follow it: they work on the new
session and are sent the new id again. After the grace the pointer has
expired and the old id is dead.

The pointer costs nothing on the ordinary path: it is only looked up when a
load or a save on a client's id finds a *tombstone* (``INVALIDATED`` /
``GONE``), which a live session never does.

What a store dump shows of a pointer: its key is a SHA-256 of the old id
under a label of its own (not the hash that keys sessions, so the two cannot
be linked), and the new id inside is sealed with AES-256-GCM under a key
derived from the *old* id, which is not in the dump either. So a dump opens
neither session. Rejected: keeping the new id's hash in the pointer (the
reader must learn the id, not its hash, to send it back) and sealing with the
application's ``secret_keys`` (rotation grace must work without them).
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ConfigError
from .ids import is_well_formed
from ._steps import Steps, StoreRef
from .stores.base import LoadResult, LoadStatus, NewRecord, RecordKey

__all__ = [
    "MAX_HOPS", "POINTER_FIELD", "POINTER_PREFIX", "check_rotation_grace", "follow",
    "is_pointer", "pointer_key", "write_pointer",
]

POINTER_FIELD: Final = "__shoal_rotated_to__"
"""The one field of a pointer record: the new id, sealed."""
POINTER_PREFIX: Final = "rot-"
"""Pointer records' ``id_hash`` starts with this, so listings can skip them."""
MAX_HOPS: Final = 4
"""A rotated session rotated again within the grace: follow at most this many pointers."""
_LABEL: Final = b"shoal rotation pointer v1\x00"
_NONCE: Final = 12


def check_rotation_grace(value: object, name: str = "rotation_grace") -> float:
    """``value`` as seconds (>= 0, finite); ``ConfigError`` naming the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value >= 0
    ):
        raise ConfigError(
            f"{name} must be a number of seconds >= 0 (30 by default, 0 turns it off), "
            f"not {value!r}"
        )
    return float(value)


def _material(old_id: str) -> bytes:
    return hashlib.sha256(_LABEL + old_id.encode("ascii")).digest()


def pointer_key(app_id: str, old_id: str) -> RecordKey:
    """Where the pointer of ``old_id`` lives; unlinkable to ``hash_id(old_id)``."""
    digest = hashlib.sha256(b"key\x00" + _material(old_id)).hexdigest()
    return RecordKey(app_id, POINTER_PREFIX + digest)


def is_pointer(key: RecordKey) -> bool:
    """True for a pointer record (not a session): CLI listings and counts skip it."""
    return key.id_hash.startswith(POINTER_PREFIX)


def _aead(old_id: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"seal\x00" + _material(old_id)).digest())


def _aad(app_id: str, old_id: str) -> bytes:
    """Binds a sealed pointer to its application and record: moved elsewhere, it opens not."""
    return app_id.encode("utf-8") + b"\x00" + pointer_key(app_id, old_id).id_hash.encode()


def seal_pointer(app_id: str, old_id: str, new_id: str) -> bytes:
    """``new_id`` encrypted and authenticated under a key only ``old_id`` gives."""
    nonce = os.urandom(_NONCE)
    aad = _aad(app_id, old_id)
    return nonce + _aead(old_id).encrypt(nonce, new_id.encode("ascii"), aad)


def open_pointer(app_id: str, old_id: str, sealed: bytes) -> str | None:
    """The new id in ``sealed``, or None for anything not sealed for ``old_id``."""
    if len(sealed) <= _NONCE:
        return None
    aad = _aad(app_id, old_id)
    try:
        plain = _aead(old_id).decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
    except InvalidTag:
        return None
    try:
        new_id = plain.decode("ascii")
    except UnicodeDecodeError:
        return None
    return new_id if is_well_formed(new_id) else None


def write_pointer(
    store: StoreRef, app_id: str, old_id: str, new_id: str, *, now: float, grace: float
) -> Steps[bool]:
    """Store the pointer ``old_id -> new_id`` for ``grace`` seconds; False if one exists.

    Written before the old id is tombstoned, so a request that finds the
    tombstone always finds the pointer too.
    """
    record = NewRecord(
        created=now,
        expires=now + grace,
        absolute_expires=now + grace,
        fields={POINTER_FIELD: seal_pointer(app_id, old_id, new_id)},
    )
    created: bool = yield store.create(pointer_key(app_id, old_id), record, now=now)
    return created


def follow(store: StoreRef, app_id: str, old_id: str, *, now: float) -> Steps[str | None]:
    """The id ``old_id`` was rotated to, while its pointer lives; else None."""
    result: LoadResult = yield store.load(pointer_key(app_id, old_id), now=now)
    if result.status is not LoadStatus.LOADED or result.record is None:
        return None
    sealed = result.record.fields.get(POINTER_FIELD)
    return None if sealed is None else open_pointer(app_id, old_id, sealed)
