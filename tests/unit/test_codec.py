"""The JSON codec: exact round trips (hypothesis) and clear refusals."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.codec import JsonCodec, decode_field, encode_field
from shoal.errors import EncodeError

codec = JsonCodec()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.dates(),
    st.times(),
    st.uuids(),
    st.decimals(allow_nan=False, allow_infinity=False),
)
hashables = st.one_of(st.integers(), st.text(), st.uuids(), st.dates())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(st.text(), inner, max_size=5),
        st.sets(hashables, max_size=5),
        st.frozensets(hashables, max_size=5),
    ),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also compares types, so a tuple never passes for a list."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dt.datetime):
        # Aware datetimes keep their UTC offset; a zone name is not kept (documented).
        # Compared as wall time plus offset: across zones, a time in a DST gap
        # or fold never compares equal (PEP 495), even to itself.
        naive = a.replace(tzinfo=None) == b.replace(tzinfo=None)
        return bool(naive and a.utcoffset() == b.utcoffset())
    return bool(a == b)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(values)
def test_every_supported_value_round_trips(value: Any) -> None:
    assert same(codec.loads(codec.dumps(value)), value)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(values, st.one_of(st.none(), st.floats(min_value=0, max_value=2e9)))
def test_fields_round_trip_with_their_expiry(value: Any, expires: float | None) -> None:
    decoded, decoded_expires = decode_field(codec, encode_field(codec, "k", value, expires))
    assert same(decoded, value) and decoded_expires == expires


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(math.inf, id="inf"),
        pytest.param(-math.inf, id="-inf"),
        pytest.param(2**200, id="bigint"),
        pytest.param({"__t__": "set", "v": [1]}, id="dict-that-looks-like-a-tag"),
        pytest.param(dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))), id="tz"),
        pytest.param(Decimal("1E+3"), id="decimal-exponent"),
        pytest.param(uuid.UUID(int=1), id="uuid"),
    ],
)
def test_edge_values_round_trip(value: Any) -> None:
    assert same(codec.loads(codec.dumps(value)), value)


def test_nan_round_trips_as_nan() -> None:
    assert math.isnan(codec.loads(codec.dumps(math.nan)))


@pytest.mark.parametrize(
    "value, reason",
    [
        pytest.param(object(), "object", id="object"),
        pytest.param({1: "a"}, "keys must be str", id="int-key"),
        pytest.param([lambda: None], "function", id="function-in-list"),
        pytest.param(type("Custom", (), {})(), "Custom", id="class-instance"),
    ],
)
def test_unsupported_values_name_the_key(value: Any, reason: str) -> None:
    with pytest.raises(EncodeError, match=reason) as info:
        encode_field(codec, "the_key", value)
    assert info.value.key == "the_key" and "the_key" in str(info.value)


def test_cycles_are_refused_not_crashing() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodeError):
        encode_field(codec, "loop", loop)


def test_equal_sets_encode_equally() -> None:
    assert codec.dumps({3, 1, 2}) == codec.dumps({2, 3, 1})


class Label(str):
    """A str subclass, as ``markupsafe.Markup`` is."""


class Count(int):
    pass


class Ratio(float):
    pass


class Bag(dict):  # type: ignore[type-arg]
    pass


class Items(list):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(Label("<b>x</b>"), "<b>x</b>", id="str"),
        pytest.param(Count(7), 7, id="int"),
        pytest.param(Ratio(0.5), 0.5, id="float"),
        pytest.param(Bag(a=Label("b")), {"a": "b"}, id="dict"),
        pytest.param(Items([Count(1)]), [1], id="list"),
        pytest.param({"k": [Label("v")]}, {"k": ["v"]}, id="nested"),
    ],
)
def test_subclasses_of_json_types_are_stored_as_their_base_type(
    value: Any, expected: Any
) -> None:
    assert same(codec.loads(codec.dumps(value)), expected)
