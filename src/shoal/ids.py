"""Session ids: 256 random bits, URL-safe, kept at rest only as a hash.

A client-supplied id is checked for shape before any store I/O, and an id the
store does not know is never adopted: the manager issues a fresh one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable

__all__ = ["IdFactory", "hash_id", "is_well_formed", "new_id", "session_ref"]

ID_BYTES = 32
# token_urlsafe(32) is 43 base64url characters without padding.
_ID_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")

IdFactory = Callable[[], str]


def new_id() -> str:
    """A fresh session id: 256 bits from ``secrets``, base64url."""
    return secrets.token_urlsafe(ID_BYTES)


def is_well_formed(value: object) -> bool:
    """True when ``value`` has the exact shape of an id shoal issued."""
    return isinstance(value, str) and _ID_SHAPE.fullmatch(value) is not None


def hash_id(session_id: str) -> str:
    """The at-rest key of a session: SHA-256 of the id, hex.

    A stolen store dump therefore holds no usable session id. The id has 256
    bits of entropy, so an unsalted hash cannot be reversed by search.
    """
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def session_ref(id_hash: str) -> str:
    """A short, non-secret label of a session for logs and error messages."""
    return id_hash[:12]
