"""Redis store URLs: schemes, the typed parameter table, masking, and failing fast.

Nothing here needs a running server: a store connects on first use, and a
port nobody listens on answers "connection refused" at once.
"""

from __future__ import annotations

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: E402

from shoal.errors import ConfigError, StoreUnavailable  # noqa: E402
from shoal.stores import open_store  # noqa: E402
from shoal.stores.base import Change, RecordKey  # noqa: E402
from shoal.stores.redis import RedisStore  # noqa: E402
from tests.servers import free_port  # noqa: E402

KEY = RecordKey("app", "a" * 64)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("redis://127.0.0.1:6390/0", id="redis"),
        pytest.param("rediss://127.0.0.1:6390/1?ssl_cert_reqs=none", id="rediss"),
        pytest.param("unix:///tmp/redis.sock?db=2", id="unix"),
        pytest.param("redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster/3", id="sentinel"),
        pytest.param("redis+cluster://127.0.0.1:1,127.0.0.1:2", id="cluster"),
        pytest.param("rediss+cluster://127.0.0.1:1?ssl_ca_certs=/etc/ca.pem", id="cluster-tls"),
    ],
)
def test_every_scheme_opens_without_connecting(url: str) -> None:
    store = open_store(url)
    assert isinstance(store, RedisStore)
    store.close()


def test_unknown_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown store URL parameter 'timeout'") as info:
        open_store("redis://127.0.0.1/0?timeout=3")
    for name in ("socket_timeout", "socket_connect_timeout", "max_connections", "prefix", "grace"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        pytest.param("redis://h/0?socket_timeout=0", "must be > 0", id="timeout-zero"),
        pytest.param("redis://h/0?max_connections=x", "invalid literal", id="not-a-number"),
        pytest.param("redis://h/0?grace=-1", "must be >= 0", id="negative-grace"),
        pytest.param("redis://h/0?prefix=a{b}", "must not contain", id="brace-prefix"),
        pytest.param("redis://h/0?sharded_pubsub=maybe", "true or false", id="bad-boolean"),
        pytest.param("redis://h/1?db=2", "not both", id="db-twice"),
        pytest.param("redis://h/0?ssl_ca_certs=/ca.pem", "need a TLS URL", id="tls-on-plain"),
        pytest.param("redis+cluster://h:1/2", "only database 0", id="cluster-db"),
        pytest.param("redis+cluster://h:x", "host:port", id="cluster-port"),
        pytest.param("redis+sentinel://h:1", "service_name", id="sentinel-no-service"),
        pytest.param("redis+sentinel://h:1/m/x", "a number", id="sentinel-db"),
    ],
)
def test_bad_parameters_name_the_fix(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_store(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:s3cret@127.0.0.1:{port}/0",
        "redis+sentinel://:s3cret@127.0.0.1:{port}/mymaster",
        "redis+cluster://user:s3cret@127.0.0.1:{port}",
    ],
)
def test_password_never_leaks(url: str) -> None:
    store = open_store(url.format(port=free_port()) + "?socket_connect_timeout=2")
    assert "s3cret" not in store.url and "***" in store.url
    assert "s3cret" not in repr(store)
    with pytest.raises(StoreUnavailable) as info:
        store.load(KEY, now=0.0)
    assert "s3cret" not in str(info.value) and info.value.store == store.url
    store.close()


def test_a_server_that_is_down_fails_fast_with_the_cause() -> None:
    # Connection refused fails at once, retries included: no timeout is waited out.
    store = open_store(f"redis://127.0.0.1:{free_port()}/0?retries=1")
    with pytest.raises(StoreUnavailable) as info:
        store.load(KEY, now=0.0)
    assert isinstance(info.value.__cause__, RedisConnectionError)
    with pytest.raises(StoreUnavailable):
        store.apply(KEY, Change(10.0), now=0.0)
    store.close()


def test_a_cluster_that_is_down_opens_and_fails_at_first_use() -> None:
    store = open_store(f"redis+cluster://127.0.0.1:{free_port()}")
    with pytest.raises(StoreUnavailable):
        store.load(KEY, now=0.0)
    with pytest.raises(StoreUnavailable):
        list(store.records())
    store.close()
