"""Checks of ``SessionManager`` settings: every bad one is a ``ConfigError`` now.

A setting that is accepted and only fails at the first request fails with
the wrong error in the wrong place (a 409 on every request for a zero lease,
a 503 blaming the store for a NaN timeout), so each argument is checked when
the manager is made, and each message names the setting and the fix.

Numbers are real numbers (``int``, ``float``, ``Decimal``...), never ``bool``
(``True`` is an ``int`` in Python) and never strings: a value read from an
environment variable is cast where it is read, as the store URL's query
parameters are cast by their typed table. Rejected: parsing numeric strings
here, which hides the type mistake and invites ``"30s"``. NaN and infinity
are refused: neither can be stored in a SQL column nor compared usefully.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from numbers import Real
from typing import Final

from .cookies import CookieOptions
from .errors import ConfigError
from .replica import MAX_MAX_BYTES, MIN_MAX_BYTES

__all__ = ["ManagerSettings", "check_manager_settings", "cookie_options", "seconds", "size_limit"]

# What a bad value of a setting breaks, and what to give instead: the fix
# that ends each message.
_HINTS: Final[dict[str, str]] = {
    "idle_timeout": "how long an unused session lives, e.g. idle_timeout=1800",
    "absolute_timeout": "the longest a session lives, e.g. absolute_timeout=7 * 86400",
    "touch_interval": "how often a read extends the idle expiry, e.g. touch_interval=60 "
    "(0: on every request, None: reads never extend it)",
    "grace": "how long an expired record is kept before purge, longer than any request, "
    "e.g. grace=120",
    "lock_timeout": "how long a serialized request waits for the lock, e.g. lock_timeout=10 "
    "(0: do not wait)",
    "lock_lease": "how long a serialized request may hold the lock, longer than any request, "
    "e.g. lock_lease=30; a lease that expires at once fences every save (409)",
}


def seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """``value`` as a finite number of seconds, > 0 (or >= 0 with ``allow_zero``)."""
    hint = _HINTS.get(name, "a number of seconds")
    if isinstance(value, bool) or not isinstance(value, Real):
        if isinstance(value, str):
            fix = f"{name}=float({value!r})" if _is_number(value) else hint
            raise ConfigError(
                f"{name}={value!r} is a string; pass a number of seconds "
                f"(cast a value read from the environment where it is read): {fix}"
            )
        kind = "a bool" if isinstance(value, bool) else f"a {type(value).__name__}"
        raise ConfigError(f"{name}={value!r} is {kind}, not a number of seconds; {hint}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name}={value!r}: give a finite number of seconds; {hint}")
    if number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}={value!r} must be {bound} seconds; {hint}")
    return number


def size_limit(name: str, value: object, example: str) -> int | None:
    """A size limit: an int >= 1, or None for none (``max_session_bytes``, ``max_keys``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "a bool" if isinstance(value, bool) else f"a {type(value).__name__}"
        raise ConfigError(
            f"{name}={value!r} is {kind}; give an int >= 1 (e.g. {name}={example}), "
            "or None for no limit"
        )
    if value < 1:
        raise ConfigError(
            f"{name}={value!r}: give an int >= 1 (e.g. {name}={example}), or None for no limit"
        )
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def cookie_options(value: object) -> CookieOptions:
    """``None`` (the defaults), a ``CookieOptions``, or a dict of its fields."""
    if value is None:
        return CookieOptions()
    if isinstance(value, CookieOptions):
        return value
    valid = [f.name for f in fields(CookieOptions)]
    if isinstance(value, Mapping):
        # Accepted as a convenience (settings files hold dicts); the fields
        # are CookieOptions' own, so nothing is declared twice.
        unknown = sorted(str(k) for k in value if k not in valid)
        if unknown:
            raise ConfigError(
                f"unknown cookie option{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; valid: {', '.join(valid)}"
            )
        return CookieOptions(**value)
    raise ConfigError(
        f"cookie={value!r}: pass CookieOptions(...) or a dict of its fields "
        f"({', '.join(valid)}), e.g. cookie={{'name': 'sid'}}"
    )


def _text(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or not value:
        none = " or None" if optional else ""
        raise ConfigError(f"{name}={value!r}: give a non-empty string{none}")


def _callable(name: str, value: object, what: str) -> None:
    if value is not None and not callable(value):
        raise ConfigError(f"{name}={value!r} is not callable; give {what}, or None")


def _store(value: object) -> None:
    if value is None or (isinstance(value, str) and value):
        return
    if isinstance(value, str):
        raise ConfigError(
            "store='' names no store; pass store=None for the default "
            "($SHOAL_STORE, else the embedded SQLite file) or a URL such as "
            "sqlite:///var/lib/app/sessions.db"
        )
    if isinstance(value, bytes | bytearray) or not (
        hasattr(value, "load") and hasattr(value, "apply")
    ):
        raise ConfigError(
            f"store={value!r}: pass a store URL (str, e.g. 'sqlite:///var/lib/app/sessions.db' "
            "or 'redis://host:6379/0'), a Store object (shoal.stores.open_store(url)), or None"
        )


@dataclass(frozen=True, slots=True)
class ManagerSettings:
    """The checked, normalised settings a manager keeps."""

    idle_timeout: float
    absolute_timeout: float
    touch_interval: float | None
    grace: float
    lock_timeout: float
    lock_lease: float
    cookie: CookieOptions
    replica_max_bytes: int


def check_manager_settings(
    *,
    store: object,
    app_id: object,
    secret_keys: object,
    idle_timeout: object,
    absolute_timeout: object,
    touch_interval: object,
    grace: object,
    cookie: object,
    lock_timeout: object,
    lock_lease: object,
    node_id: object,
    clock: object,
    id_factory: object,
    replica: object,
    replica_max_bytes: object,
) -> ManagerSettings:
    """Every ``SessionManager`` argument checked; the first bad one raises."""
    _store(store)
    _text("app_id", app_id)
    assert isinstance(app_id, str)
    if ":" in app_id or "{" in app_id or "}" in app_id:
        raise ConfigError(f"app_id {app_id!r} must be non-empty without ':', '{{' or '}}'")
    idle = seconds("idle_timeout", idle_timeout)
    absolute = seconds("absolute_timeout", absolute_timeout)
    if absolute < idle:
        # Rejected: accepting it. The idle timeout could never apply, which
        # is nearly always a unit mix-up; equal values say "fixed lifetime".
        raise ConfigError(
            f"absolute_timeout={absolute_timeout!r} is shorter than idle_timeout="
            f"{idle_timeout!r}: no session could ever reach its idle timeout; set "
            f"idle_timeout <= absolute_timeout (equal values give every session a fixed "
            "lifetime)"
        )
    # None: reads never extend a session (Django's sessions: only saves do).
    touch = (
        None
        if touch_interval is None
        else seconds("touch_interval", touch_interval, allow_zero=True)
    )
    if touch is not None and touch > idle / 2:
        raise ConfigError(
            f"touch_interval={touch_interval} is more than half of idle_timeout="
            f"{idle_timeout}: a session could expire between touches; "
            f"set touch_interval to at most {idle / 2:g}"
        )
    grace_s = seconds("grace", grace, allow_zero=True)
    wait = seconds("lock_timeout", lock_timeout, allow_zero=True)
    lease = seconds("lock_lease", lock_lease)
    options = cookie_options(cookie)
    _text("node_id", node_id, optional=True)
    _callable("clock", clock, "a function returning the time in seconds (time.time)")
    _callable("id_factory", id_factory, "a function returning a new session id")
    if not (isinstance(replica, bool) or replica == "only"):
        raise ConfigError(f"replica={replica!r}; use False, True or 'only'")
    if isinstance(replica_max_bytes, bool) or not isinstance(replica_max_bytes, int):
        raise ConfigError(
            f"replica_max_bytes={replica_max_bytes!r}: give an int number of bytes from "
            f"{MIN_MAX_BYTES} to {MAX_MAX_BYTES}, e.g. 6144"
        )
    if not MIN_MAX_BYTES <= replica_max_bytes <= MAX_MAX_BYTES:
        raise ConfigError(
            f"replica_max_bytes={replica_max_bytes}: use {MIN_MAX_BYTES} to {MAX_MAX_BYTES} "
            "(browsers keep about 4 KB per cookie and proxies limit the Cookie header; "
            "6144 fits the common 8 KB header limits)"
        )
    if replica == "only" and store is not None:
        raise ConfigError(
            "replica='only' keeps sessions in the client's cookie and uses no store; "
            "drop the store argument, or use replica=True to keep both"
        )
    if replica and not secret_keys:
        raise ConfigError(
            f"replica={replica!r} seals sessions and needs secret_keys=[...] (newest "
            "first); e.g. secret_keys=shoal.config.secret_keys_from_env() with "
            "SHOAL_SECRET_KEYS set"
        )
    if not replica and secret_keys:
        # The keys are checked and used only by the replica sealer; ignoring
        # them silently would leave a user believing sessions are sealed.
        raise ConfigError(
            "secret_keys are used only to seal client-side replicas, and replicas are off: "
            "set replica=True (or replica='only' for stateless cookie sessions), or drop "
            "secret_keys"
        )
    return ManagerSettings(
        idle_timeout=idle,
        absolute_timeout=absolute,
        touch_interval=touch,
        grace=grace_s,
        lock_timeout=wait,
        lock_lease=lease,
        cookie=options,
        replica_max_bytes=replica_max_bytes,
    )
