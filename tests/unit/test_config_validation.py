"""Every bad ``SessionManager`` setting is a ``ConfigError`` at construction.

A setting that would fail later (a 409 on every request, a 503 blaming the
store, an AttributeError at the first request) must fail when the manager is
made, with a message that names the setting and the fix, and never a secret.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from shoal import ConfigError, CookieOptions, SessionManager
from shoal.config import secret_keys_from_env
from shoal.sealing import Sealer, Secret

GOOD_KEY = "config-validation-test-key-0123456789abcdef"


def manager(**kw: Any) -> SessionManager:
    return SessionManager("memory://", **kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        pytest.param({"policy": "serialized", "lock_lease": 0}, "lock_lease=0", id="lease-zero"),
        pytest.param({"lock_lease": -1}, "lock_lease", id="lease-negative"),
        pytest.param({"lock_lease": math.inf}, "lock_lease=inf.*finite", id="lease-inf"),
        pytest.param({"idle_timeout": math.nan}, "idle_timeout=nan", id="idle-nan"),
        pytest.param({"idle_timeout": math.inf}, "idle_timeout=inf", id="idle-inf"),
        pytest.param({"idle_timeout": "1800"}, r"idle_timeout='1800'.*float\(", id="idle-str"),
        pytest.param({"idle_timeout": True}, "idle_timeout=True.*bool", id="idle-bool"),
        pytest.param({"idle_timeout": 0}, "idle_timeout=0", id="idle-zero"),
        pytest.param({"idle_timeout": None}, "idle_timeout=None", id="idle-none"),
        pytest.param({"absolute_timeout": -5}, "absolute_timeout", id="absolute-negative"),
        pytest.param({"absolute_timeout": 900}, "absolute_timeout=900.*idle_timeout=1800",
                     id="absolute-below-idle"),
        pytest.param({"lock_timeout": -1}, "lock_timeout=-1", id="lock-timeout-negative"),
        pytest.param({"lock_timeout": math.nan}, "lock_timeout=nan", id="lock-timeout-nan"),
        pytest.param({"touch_interval": -1}, "touch_interval=-1", id="touch-negative"),
        pytest.param({"touch_interval": "60"}, "touch_interval='60'", id="touch-str"),
        pytest.param({"grace": -1}, "grace=-1", id="grace-negative"),
        pytest.param({"grace": math.inf}, "grace=inf", id="grace-inf"),
        pytest.param({"grace": False}, "grace=False.*bool", id="grace-bool"),
        pytest.param({"replica_max_bytes": -5}, "replica_max_bytes=-5", id="max-bytes-negative"),
        pytest.param({"replica_max_bytes": "x"}, "replica_max_bytes='x'", id="max-bytes-str"),
        pytest.param({"replica_max_bytes": 6144.5}, "replica_max_bytes=6144.5.*int",
                     id="max-bytes-float"),
        pytest.param({"replica_max_bytes": True}, "replica_max_bytes=True", id="max-bytes-bool"),
        pytest.param({"replica": 1, "secret_keys": [GOOD_KEY]}, "replica=1", id="replica-int"),
        pytest.param({"app_id": 5}, "app_id=5", id="app-id-int"),
        pytest.param({"node_id": 5}, "node_id=5", id="node-id-int"),
        pytest.param({"policy": 5}, "policy", id="policy-int"),
        pytest.param({"clock": 5}, "clock", id="clock-not-callable"),
        pytest.param({"id_factory": "x"}, "id_factory", id="id-factory-not-callable"),
        pytest.param({"cookie": {"nmae": "sid"}}, "nmae.*valid.*name.*samesite",
                     id="cookie-dict-unknown-field"),
        pytest.param({"cookie": "sid"}, "cookie=.*CookieOptions", id="cookie-str"),
        pytest.param({"cookie": {"max_age": -1}}, "max_age", id="cookie-max-age-negative"),
        pytest.param({"cookie": {"max_age": "60"}}, "max_age", id="cookie-max-age-str"),
        pytest.param({"cookie": {"name": 5}}, "cookie name", id="cookie-name-int"),
        pytest.param({"cookie": {"secure": "yes"}}, "secure", id="cookie-secure-str"),
        pytest.param({"secret_keys": [GOOD_KEY]}, "replica=True", id="keys-without-replica"),
    ],
)
def test_bad_settings_fail_at_construction(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        manager(**kw)


@pytest.mark.parametrize(
    ("store", "match"),
    [
        pytest.param(5, "store=5.*URL.*Store", id="int"),
        pytest.param("", "store=''.*None", id="empty-string"),
        pytest.param(b"memory://", "store=b'memory://'", id="bytes"),
    ],
)
def test_bad_store_argument(store: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SessionManager(store)


@pytest.mark.parametrize(
    "kw",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"lock_timeout": 0}, id="lock-timeout-zero-means-no-wait"),
        pytest.param({"touch_interval": 0}, id="touch-every-request"),
        pytest.param({"grace": 0}, id="grace-zero"),
        pytest.param({"idle_timeout": 600, "absolute_timeout": 600}, id="absolute-equals-idle"),
        pytest.param({"idle_timeout": 1800.5, "lock_lease": 0.5}, id="floats"),
        pytest.param({"cookie": {"name": "sid", "max_age": 3600}}, id="cookie-dict"),
        pytest.param({"cookie": CookieOptions(name="sid")}, id="cookie-options"),
        pytest.param({"replica": True, "secret_keys": [GOOD_KEY]}, id="replica"),
        pytest.param({"replica": True, "secret_keys": [Secret(GOOD_KEY)]}, id="replica-secret"),
    ],
)
def test_good_settings_are_kept(kw: dict[str, Any]) -> None:
    made = manager(**kw)
    if isinstance(kw.get("cookie"), dict):
        assert made.cookie == CookieOptions(**kw["cookie"])
    assert isinstance(made.idle_timeout, float) and isinstance(made.lock_lease, float)


def test_cookie_dict_becomes_cookie_options() -> None:
    made = manager(cookie={"name": "sid"})
    assert made.cookie == CookieOptions(name="sid")


# -- secret keys ---------------------------------------------------------------

NO_ENTROPY = "ab" * 20  # 40 characters, 2 distinct


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        pytest.param([b"x" * 40], "#1 has 1 distinct byte in 40", id="bytes-no-entropy"),
        pytest.param([b"short"], "#1 is 5 bytes.*32", id="bytes-short"),
        pytest.param([12345], "#1 is an int.*str or bytes", id="int"),
        pytest.param([GOOD_KEY, None], "#2 is None.*str or bytes", id="none-second"),
        pytest.param([" " * 32], "#1 is whitespace", id="whitespace"),
        pytest.param([NO_ENTROPY], "#1 has 2 distinct characters", id="repeated"),
        pytest.param(["x" * 31], "#1 is 31 characters.*32", id="short"),
        pytest.param([GOOD_KEY, "ab" * 20], "#2", id="second-bad"),
        pytest.param([""], "#1", id="empty-key"),
        pytest.param(b"k" * 40, "list of keys", id="bytes-not-list"),
    ],
)
def test_bad_secret_keys(keys: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        manager(replica=True, secret_keys=keys)
    assert "secrets.token_urlsafe(32)" in str(info.value) or "list" in str(info.value)


def test_bytes_keys_work() -> None:
    import os

    key = os.urandom(32)
    made = manager(replica=True, secret_keys=[key, GOOD_KEY])
    assert repr(key) not in repr(made)
    sealer = Sealer([key])
    assert sealer.open(sealer.seal(b"data", b"ctx"), b"ctx") == b"data"
    # bytes and the same text as str are one key: a key moved from an env
    # var (str) to a file read as bytes still opens what it sealed
    assert Sealer([GOOD_KEY.encode()]).open(Sealer([GOOD_KEY]).seal(b"d", b"c"), b"c") == b"d"


def test_secret_keys_from_env_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_SECRET_KEYS", f" {GOOD_KEY} ,, ")
    keys = secret_keys_from_env()
    assert len(keys) == 1 and all(isinstance(k, Secret) for k in keys)
    assert GOOD_KEY not in repr(keys)
    manager(replica=True, secret_keys=keys)
    monkeypatch.setenv("SHOAL_SECRET_KEYS", f"{GOOD_KEY},{NO_ENTROPY}")
    with pytest.raises(ConfigError, match="SHOAL_SECRET_KEYS.*#2 has 2 distinct") as info:
        secret_keys_from_env()
    assert NO_ENTROPY not in str(info.value) and GOOD_KEY not in str(info.value)


# -- no secret in any message ------------------------------------------------

SECRET = "Zq8-not-for-logs-vW2pL9xK4mN7bR1tY6uE3oA5"


@pytest.mark.parametrize(
    "kw",
    [
        pytest.param({"replica": True, "secret_keys": [SECRET[:20]]}, id="short"),
        pytest.param({"replica": True, "secret_keys": [SECRET, SECRET[:3] * 14]}, id="second"),
        pytest.param({"replica": True, "secret_keys": [SECRET.encode()[:20]]}, id="short-bytes"),
        pytest.param({"replica": True, "secret_keys": SECRET}, id="a-string"),
        pytest.param({"secret_keys": [SECRET]}, id="without-replica"),
        pytest.param({"replica": "yes", "secret_keys": [SECRET]}, id="bad-replica"),
        pytest.param({"replica": True, "secret_keys": [SECRET], "idle_timeout": -1}, id="other"),
    ],
)
def test_no_secret_in_any_config_error(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        manager(**kw)
    message = str(info.value)
    for fragment in (SECRET, SECRET[:20], SECRET[:10], repr(SECRET.encode()[:20])):
        assert fragment not in message
