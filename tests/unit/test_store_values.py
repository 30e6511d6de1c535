"""The store contract's value types behave as frozen slots dataclasses (issue 11).

``stores.base`` gives them a faster ``__init__`` than dataclasses generates
(``_fast_init``); everything callers see must be what the dataclass would
give: signature and defaults, a fresh default per factory field, frozen
instances, ``==``, ``hash``, ``repr`` and ``dataclasses.replace``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from typing import Any

import pytest

from shoal.stores import base
from shoal.stores.base import (
    ApplyResult,
    ApplyStatus,
    Change,
    LoadResult,
    LoadStatus,
    Record,
    RecordKey,
)

VALUE_TYPES = [
    base.RecordKey,
    base.Touch,
    base.LockRequest,
    base.Record,
    base.LoadResult,
    base.NewRecord,
    base.Change,
    base.ApplyResult,
    base.RecordInfo,
    base.Ended,
]


def _sample(cls: type) -> Any:
    """An instance with every required field given a value of its own."""
    required = {
        f.name: f"v{i}"
        for i, f in enumerate(dataclasses.fields(cls))
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    return cls(**required)


@pytest.mark.parametrize("cls", VALUE_TYPES, ids=lambda c: c.__name__)
def test_signature_is_the_dataclass_one(cls: type) -> None:
    params = inspect.signature(cls).parameters
    fields = dataclasses.fields(cls)
    assert list(params) == [f.name for f in fields]
    for f in fields:
        param = params[f.name]
        assert param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        if f.default is not dataclasses.MISSING:
            assert param.default is f.default
        elif f.default_factory is dataclasses.MISSING:
            assert param.default is inspect.Parameter.empty


@pytest.mark.parametrize("cls", VALUE_TYPES, ids=lambda c: c.__name__)
def test_frozen_slots_and_replace(cls: type) -> None:
    value = _sample(cls)
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, first, "other")
    with pytest.raises((AttributeError, TypeError)):
        value.unknown = 1
    assert not hasattr(value, "__dict__")
    assert dataclasses.replace(value) == value
    changed = dataclasses.replace(value, **{first: "other"})
    assert getattr(changed, first) == "other" and changed != value
    assert copy.copy(value) == value == pickle.loads(pickle.dumps(value))
    assert repr(value).startswith(f"{cls.__name__}({first}=")


def test_positional_keyword_and_defaults() -> None:
    record = Record(1, 2.0, 3.0, 4.0, 5.0, {"a": b"x"}, {"a": 1})
    assert record == Record(
        version=1, created=2.0, accessed=3.0, expires=4.0, absolute_expires=5.0,
        fields={"a": b"x"}, field_versions={"a": 1},
    )  # fmt: skip
    assert dataclasses.replace(record, expires=9.0).expires == 9.0
    change = Change(1800.0)
    assert (change.set, change.delete, change.replace, change.expect_version) == ({}, (), False, None)
    assert (change.expect_fields, change.lease_token, change.release) == ({}, None, False)
    assert Change(1800.0).set is not change.set  # a fresh dict per instance, as a factory makes
    assert Change(1.0, {"k": b"v"}, ("d",), True, 3, {"k": 2}, "t", True).lease_token == "t"
    with pytest.raises(TypeError):
        Change()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Change(1.0, nope=1)  # type: ignore[call-arg]
    assert LoadResult(LoadStatus.ABSENT) == LoadResult(LoadStatus.ABSENT, None, None)
    assert ApplyResult(ApplyStatus.OK, 2) == ApplyResult(ApplyStatus.OK, version=2, conflicts=())


def test_record_key_is_a_dict_key() -> None:
    key = RecordKey("app", "h")
    assert {key: 1}[RecordKey("app", "h")] == 1
    assert hash(key) == hash(RecordKey(app_id="app", id_hash="h"))
    as_tuple: object = ("app", "h")
    assert key != RecordKey("app", "other") and key != as_tuple
