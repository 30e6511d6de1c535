"""Session values to bytes and back: JSON through orjson, with tagged types.

JSON alone would silently turn a ``datetime`` into a string and a ``tuple``
into a list, so values beyond JSON are written as tagged objects
``{"__t__": TAG, "v": ...}``: datetime, date, time, UUID, Decimal, bytes,
set, frozenset, tuple, non-finite floats and integers beyond 64 bits. A user
dict that itself has a ``"__t__"`` key is escaped the same way, so every value
round-trips exactly. Subclasses of str, int, float, dict and list (``Markup``,
``IntEnum``, ``OrderedDict``) are stored as their base type and come back as
it. Pickle is never used: a forged record must not run code.

Each stored field is framed by one leading byte so per-key expiry travels
with the value, and stores can keep treating fields as opaque bytes:
``b"j" + json`` (plain) or ``b"x" + 8-byte expiry + json`` (expires at).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import struct
import uuid
from decimal import Decimal
from typing import Any, Final, Protocol

import orjson

from .errors import DecodeError, EncodeError

__all__ = ["Codec", "JsonCodec", "decode_field", "encode_field", "field_body", "field_expiry"]

_TAG: Final = "__t__"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXPIRY = struct.Struct(">d")


class Codec(Protocol):
    """Turns one session value into bytes and back; raises on what it refuses."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def _tag(tag: str, value: Any) -> dict[str, Any]:
    return {_TAG: tag, "v": value}


def _encode(value: Any) -> Any:
    """Map ``value`` onto plain JSON, tagging every type JSON would lose."""
    # Exact type checks first: bool is an int and datetime is a date.
    kind = type(value)
    if value is None or kind is str or kind is bool:
        return value
    if kind is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else _tag("int", str(value))
    if kind is float:
        return value if math.isfinite(value) else _tag("float", repr(value))
    if kind is list:
        return [_encode(item) for item in value]
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"dict keys must be str, not {type(key).__name__}")
            out[key] = _encode(item)
        return _tag("dict", out) if _TAG in out else out
    if kind is tuple:
        return _tag("tuple", [_encode(item) for item in value])
    if kind is set or kind is frozenset:
        items = [_encode(item) for item in value]
        # Sorted by encoding, so equal sets encode to equal bytes.
        items.sort(key=orjson.dumps)
        return _tag("set" if kind is set else "frozenset", items)
    if kind is dt.datetime:
        return _tag("datetime", value.isoformat())
    if kind is dt.date:
        return _tag("date", value.isoformat())
    if kind is dt.time:
        return _tag("time", value.isoformat())
    if kind is uuid.UUID:
        return _tag("uuid", str(value))
    if kind is Decimal:
        return _tag("decimal", str(value))
    if kind is bytes or kind is bytearray:
        return _tag("bytes", base64.b64encode(value).decode("ascii"))
    base = _json_base(value)
    if base is not None:
        return _encode(base)
    raise TypeError(f"values of type {kind.__name__} are not supported by the JSON codec")


def _json_base(value: Any) -> Any:
    """A subclass of a JSON type as that type (``Markup`` -> str), else None.

    Stored as the base type and read back as it: ``markupsafe.Markup`` comes
    back as a plain ``str``, an ``IntEnum`` as an ``int``, an ``OrderedDict``
    as a ``dict``. Rejected: refusing them (a Markup flash message failed with
    an error naming an internal key) and tagging the class name (decoding
    would have to import classes named by stored data). bool is final, and
    subclasses of the tagged types (tuple, set, datetime, ...) stay refused.
    The base methods are called directly so an overridden ``__str__`` or
    ``__int__`` cannot change what is stored.
    """
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return None


_DECODERS: Final[dict[str, Any]] = {
    "int": int,
    "float": float,
    "tuple": lambda v: tuple(_decode(i) for i in v),
    "set": lambda v: {_decode(i) for i in v},
    "frozenset": lambda v: frozenset(_decode(i) for i in v),
    "dict": lambda v: {k: _decode(i) for k, i in v.items()},
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "uuid": uuid.UUID,
    "decimal": Decimal,
    "bytes": base64.b64decode,
}


def _decode(value: Any) -> Any:
    if type(value) is list:
        return [_decode(item) for item in value]
    if type(value) is dict:
        tag = value.get(_TAG)
        if tag is not None and len(value) == 2 and "v" in value:
            return _DECODERS[tag](value["v"])
        return {key: _decode(item) for key, item in value.items()}
    return value


class JsonCodec:
    """The default codec: JSON via orjson, exact round trip of tagged types."""

    def dumps(self, value: Any) -> bytes:
        try:
            return orjson.dumps(_encode(value))
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise TypeError(str(exc)) from exc

    def loads(self, data: bytes) -> Any:
        """The value in ``data``; ``DecodeError`` for anything this codec did not write."""
        try:
            parsed = orjson.loads(data)
            # Only values that contain a tag need the second walk.
            return _decode(parsed) if b'"__t__"' in data else parsed
        except Exception as exc:  # noqa: BLE001 - JSON, tag, Decimal, date, int-size errors
            # A tagged value's decoder can raise nearly anything on bytes it
            # did not write (KeyError, TypeError, decimal.InvalidOperation):
            # callers get one error to catch. Found by fuzzing (tests/fuzz/).
            raise DecodeError(f"not a value this codec wrote: {type(exc).__name__}: {exc}") from exc


def encode_field(codec: Codec, key: str, value: Any, expires: float | None = None) -> bytes:
    """Frame ``value`` for storage; ``EncodeError`` names ``key`` on refusal."""
    try:
        body = codec.dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(key, str(exc)) from exc
    if expires is None:
        return b"j" + body
    return b"x" + _EXPIRY.pack(expires) + body


def decode_field(codec: Codec, data: bytes) -> tuple[Any, float | None]:
    """Unframe a stored field into ``(value, expires_at_or_None)``.

    ``DecodeError`` (a ``ValueError``) for a frame or a value this codec cannot
    read, whatever a custom codec raised underneath.
    """
    expires = field_expiry(data)
    start = 1 if expires is None else 1 + _EXPIRY.size
    try:
        return codec.loads(data[start:]), expires
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a custom codec's own errors
        raise DecodeError(f"the codec cannot read this field: {type(exc).__name__}: {exc}") from exc


def field_expiry(data: bytes) -> float | None:
    """When a stored field expires (None: with the session), without decoding its value.

    ``DecodeError`` (a ``ValueError``) for a frame this version does not know.
    """
    frame = data[:1]
    if frame == b"j":
        return None
    if frame == b"x" and len(data) >= 1 + _EXPIRY.size:
        (expires,) = _EXPIRY.unpack_from(data, 1)
        return float(expires)
    raise DecodeError(f"unknown or truncated field frame {frame!r}")


def field_body(data: bytes, limit: int | None = None) -> bytes:
    """The codec's bytes of a stored field (its frame removed), at most ``limit`` of them.

    For a look at a value without decoding it all (``shoal show``): slicing
    copies only what is kept. ``ValueError`` for a frame this version does not know.
    """
    start = 1 if field_expiry(data) is None else 1 + _EXPIRY.size
    return data[start:] if limit is None else data[start : start + limit]
