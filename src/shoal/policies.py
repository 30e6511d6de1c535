"""The four locking policies, written once on top of the store primitives.

=============  =========================================================
lossy          no lock; the whole record is written; last write wins
merge          no lock; only the keys this request changed are written
               onto the newest record: different keys all survive
optimistic     as merge, but a key this request read or wrote that another
               request changed since the load raises ``ConflictError``
serialized     an exclusive lease taken with the load and released with the
               save; a holder whose lease expired is fenced (``LockLost``)
=============  =========================================================

Each policy reduces to one ``Change`` that the store applies atomically, so
every store has the same semantics. ``read_only`` opens take no lock under
any policy.
"""

from __future__ import annotations

import enum

from .errors import ConfigError
from .session import Session
from .stores.base import Change

__all__ = ["Policy", "build_change", "parse_policy"]


class Policy(str, enum.Enum):
    LOSSY = "lossy"
    MERGE = "merge"
    OPTIMISTIC = "optimistic"
    SERIALIZED = "serialized"

    @property
    def locks(self) -> bool:
        return self is Policy.SERIALIZED


def parse_policy(value: str | Policy) -> Policy:
    """The ``Policy`` named ``value``; ``ConfigError`` lists the valid names."""
    try:
        return Policy(value)
    except ValueError:
        valid = ", ".join(p.value for p in Policy)
        raise ConfigError(f"unknown session policy {value!r}; valid: {valid}") from None


# Read once: on Python 3.11 each ``Policy.X`` runs EnumType's lookup (issue 11).
_LOSSY, _MERGE, _OPTIMISTIC = Policy.LOSSY, Policy.MERGE, Policy.OPTIMISTIC


def build_change(
    policy: Policy, session: Session, *, idle_timeout: float, lease_token: str | None
) -> Change:
    """The one atomic store write that saves ``session`` under ``policy``."""
    # The session's own sets, read and never kept: the public properties
    # would copy each into a frozenset first (issue 11).
    written = session._written
    # Keys whose per-key expiry passed are dropped on the next save.
    stale = session._stale
    deleted = session._deleted | (stale - written) if stale else session._deleted
    if policy is _LOSSY:
        return Change(idle_timeout=idle_timeout, set=session._encoded_fields(), replace=True)
    changes = session._encoded_fields(written)
    if policy is _MERGE:
        return Change(idle_timeout=idle_timeout, set=changes, delete=deleted)
    if policy is _OPTIMISTIC:
        seen = session._field_versions()
        watched = session._read | written | deleted
        return Change(
            idle_timeout=idle_timeout,
            set=changes,
            delete=deleted,
            expect_fields={key: seen.get(key) for key in watched},
        )
    return Change(
        idle_timeout=idle_timeout,
        set=changes,
        delete=deleted,
        expect_version=session.version,
        lease_token=lease_token,
        release=True,
    )
