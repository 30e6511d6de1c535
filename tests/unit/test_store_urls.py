"""Store URLs that can never work are a ``ConfigError`` when the store is made.

Nothing here connects: every network store connects on first use, so each
case below fails (or opens) without a server. Messages must name the fix and
never show a password, wherever in the URL it was written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.errors import ConfigError
from shoal.stores import open_store
from shoal.stores._url import mask_url, url_path
from shoal.stores.sqlite import SQLiteStore

SECRET = "s3cretPassw0rd"


def _needs(url: str) -> None:
    """Skip a case whose store needs an extra that is not installed."""
    if url.startswith(("redis", "rediss", "unix")):
        pytest.importorskip("redis", reason="the redis extra is not installed")
    elif url.startswith("postgres"):
        pytest.importorskip("psycopg_pool", reason="the postgres extra is not installed")
    elif url.startswith("mysql"):
        pytest.importorskip("pymysql", reason="the mysql extra is not installed")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        pytest.param("redis://127.0.0.1:notaport/0", "port 'notaport' is not a number",
                     id="redis-port-word"),
        pytest.param("redis://127.0.0.1:99999/0", "port 99999 is out of range",
                     id="redis-port-range"),
        pytest.param("redis://127.0.0.1:0/0", "port 0 is out of range", id="redis-port-zero"),
        pytest.param("redis://[::1/0", "invalid IPv6", id="redis-bracket"),
        pytest.param("redis://h/abc", "database number", id="redis-db-word"),
        pytest.param("redis://h/0/1", "database number", id="redis-db-two-segments"),
        pytest.param("redis://h1:1,h2:2/0", "one host", id="redis-two-hosts"),
        pytest.param("rediss://h:65536/0", "out of range", id="rediss-port"),
        pytest.param("unix://", "socket path", id="unix-no-path"),
        pytest.param("unix://host/tmp/redis.sock", "no host", id="unix-host"),
        pytest.param("redis+sentinel://h:99999/m", "out of range", id="sentinel-port"),
        pytest.param("redis+sentinel://[::1:26379/m", "invalid IPv6", id="sentinel-bracket"),
        pytest.param("redis+cluster://h:70000", "out of range", id="cluster-port"),
        pytest.param("redis+cluster://h:1,:2", "host", id="cluster-empty-host"),
        pytest.param("postgresql://u@h:99999/db", "out of range", id="pg-port-range"),
        pytest.param("postgresql://u@h:x/db", "port 'x' is not a number", id="pg-port-word"),
        pytest.param("postgresql://u@[::1/db", "invalid IPv6", id="pg-bracket"),
        pytest.param("postgresql://u@h1:5432,h2:x/db", "port 'x'", id="pg-second-host-port"),
        pytest.param("mysql://u@h:99999/db", "out of range", id="mysql-port-range"),
        pytest.param("mysql://u@h:x/db", "port 'x' is not a number", id="mysql-port-word"),
        pytest.param("mysql://u@[::1/db", "invalid IPv6", id="mysql-bracket"),
        pytest.param("memory://?x=1", "unknown store URL parameter 'x'.*valid: none",
                     id="memory-param"),
        pytest.param("memory://foo", "memory://", id="memory-host"),
        pytest.param("memory:///foo", "memory://", id="memory-path"),
        pytest.param("sqlite:///tmp/x.db?busy_timeout=-1", "busy_timeout",
                     id="sqlite-busy-negative"),
        pytest.param("sqlite:///tmp/x.db?busy_timeout=nan", "busy_timeout", id="sqlite-busy-nan"),
        pytest.param("redis://h/0?grace=nan", "grace", id="redis-grace-nan"),
        pytest.param("redis://h/0?socket_timeout=inf", "socket_timeout", id="redis-timeout-inf"),
    ],
)
def test_a_url_that_can_never_work_is_a_config_error(url: str, match: str) -> None:
    _needs(url)
    with pytest.raises(ConfigError, match=match):
        open_store(url)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("redis://", id="redis-defaults"),
        pytest.param("redis://[::1]:6380/2", id="redis-ipv6"),
        pytest.param("redis://h:6379/", id="redis-no-db"),
        pytest.param("unix:///tmp/redis.sock", id="unix"),
        pytest.param("redis+cluster://[::1]:7000,h:7001", id="cluster-ipv6"),
        pytest.param("postgresql://u@h1:5432,h2:5433/db", id="pg-two-hosts"),
        pytest.param("postgresql:///db?host=/var/run/postgresql", id="pg-socket"),
        pytest.param("postgresql://u@[::1]:5432/db", id="pg-ipv6"),
        pytest.param("mysql://u@[::1]:3306/db", id="mysql-ipv6"),
        pytest.param("memory://", id="memory"),
    ],
)
def test_urls_that_can_work_still_open(url: str) -> None:
    _needs(url)
    open_store(url).close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"postgresql://u@h/db?password={SECRET}&bogus=1", id="pg-query-password"),
        pytest.param(f"redis://h/0?password={SECRET}&bogus=1", id="redis-query-password"),
        pytest.param(f"mysql://u@h/db?bogus=1&password={SECRET}", id="mysql-query-password"),
        pytest.param(f"redis://u:{SECRET}@h:99999/0", id="redis-netloc-bad-port"),
        pytest.param(f"redis://u:{SECRET}@[::1/0", id="redis-netloc-bad-ipv6"),
        pytest.param(f"postgresql://u:{SECRET}@h:x/db", id="pg-netloc-bad-port"),
        pytest.param(f"mysql://u:{SECRET}@[::1/db", id="mysql-netloc-bad-ipv6"),
        pytest.param(f"redis+sentinel://:{SECRET}@h:99999/m", id="sentinel-netloc"),
        pytest.param(f"nosuch://u:{SECRET}@[::1/0", id="unknown-scheme-bad-ipv6"),
        # A password written with a raw "/", "?" or "#" (base64 has "/"): the
        # URL parsers end the netloc there, the mask must not.
        pytest.param(f"redis://u:pa/{SECRET}@h/0", id="redis-raw-slash-in-password"),
        pytest.param(f"postgresql://u:pa?{SECRET}@h/db", id="pg-raw-query-in-password"),
        pytest.param(f"mysql://u:pa#{SECRET}@h/db", id="mysql-raw-hash-in-password"),
        pytest.param(f"redis://u:p@ss/{SECRET}@h/0", id="redis-raw-at-and-slash"),
    ],
)
def test_no_password_in_any_url_error(url: str) -> None:
    _needs(url)
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert SECRET not in str(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"redis://u:pa/{SECRET}@h/0", id="redis-slash"),
        pytest.param(f"redis://u:pa?{SECRET}@h/0", id="redis-question-mark"),
        pytest.param(f"postgresql://u:pa#{SECRET}@h/db", id="pg-hash"),
        pytest.param(f"mysql://u:12/{SECRET}@h/db", id="mysql-digits-then-slash"),
        pytest.param(f"redis://u:12?{SECRET}@h/0", id="redis-digits-then-question-mark"),
    ],
)
def test_raw_delimiter_in_password_is_refused_without_echoing_it(url: str) -> None:
    # Any part of the password, not only what follows the delimiter: the
    # parsers read "pa" as a port and "12" as a valid one.
    _needs(url)
    with pytest.raises(ConfigError, match="percent-encode") as info:
        open_store(url)
    message = str(info.value)
    assert SECRET not in message
    assert ":pa" not in message and ":12" not in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:6379/0?client_name=ops@example&breaker=off",
        "redis://h/0?client_name=ops@example&breaker=off",
        "redis://[::1]/0?client_name=a:b@c&breaker=off",
        "redis+sentinel://h1:26379,h2:26379/m?client_name=ops@example&breaker=off",
        "redis://u:p%2Fw@h:6379/0?client_name=ops@example&breaker=off",
    ],
)
def test_at_in_a_query_value_is_no_password(url: str) -> None:
    pytest.importorskip("redis", reason="the redis extra is not installed")
    open_store(url).close()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        pytest.param("redis://u:pw@h/0", "redis://u:***@h/0", id="netloc"),
        pytest.param("redis://:pw@h/0", "redis://:***@h/0", id="netloc-no-user"),
        pytest.param("postgresql://u@h/db?password=pw&x=1", "postgresql://u@h/db?password=***&x=1",
                     id="query"),
        pytest.param("postgresql://u@h/db?sslpassword=pw", "postgresql://u@h/db?sslpassword=***",
                     id="query-sslpassword"),
        pytest.param("redis://u:pw@[::1/0", "redis://u:***@[::1/0", id="malformed"),
        pytest.param("redis://h/0", "redis://h/0", id="nothing-to-mask"),
        pytest.param("redis://u:a/b@h/0", "redis://u:***@h/0", id="raw-slash"),
        pytest.param("redis://u:a?b@h/0?db=1", "redis://u:***@h/0?db=1", id="raw-question-mark"),
        pytest.param("redis://u:a#b@h/0", "redis://u:***@h/0", id="raw-hash"),
        pytest.param("redis://u:a@b/c@h/0", "redis://u:***@h/0", id="raw-at-and-slash"),
        pytest.param("unix://:pw@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0",
                     id="unix-socket"),
        # Over-masked rather than risk a leak: an "@" in a query value reads
        # as the end of a password written with a raw "/" or "?".
        pytest.param("redis://h:6379/0?client_name=a@b", "redis://h:***@b",
                     id="at-in-query-over-masked"),
        pytest.param("redis://h:6379/0?client_name=ab", "redis://h:6379/0?client_name=ab",
                     id="port-kept"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "path"),
    [
        pytest.param("sqlite:///var/my%20dir/s.db", "/var/my dir/s.db", id="sqlite-space"),
        pytest.param("file:///var/a%25b", "/var/a%b", id="file-percent"),
        pytest.param("dbm:rel%20dir/s.dbm", "rel dir/s.dbm", id="dbm-relative"),
        pytest.param("sqlite:////var/s.db", "/var/s.db", id="four-slashes"),
    ],
)
def test_paths_are_percent_decoded(url: str, path: str) -> None:
    assert url_path(url) == path


def test_a_percent_encoded_directory_is_made_decoded(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path}/my%20dir/s.db")
    assert isinstance(store, SQLiteStore)
    store.migrate()
    assert (tmp_path / "my dir" / "s.db").is_file()
    assert not (tmp_path / "my%20dir").exists()
    store.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        pytest.param("sqlite:///rel.db", r"sqlite:///var/lib/app/rel\.db.*relative.*sqlite:rel\.db",
                     id="three-slashes"),
        pytest.param("sqlite:////rel.db", r"filesystem root", id="four-slashes"),
        pytest.param("sqlite://:memory:", r"per connection.*use memory://", id="memory-as-host"),
        pytest.param("sqlite:///:memory:", r"per connection.*use memory://", id="memory-as-path"),
        pytest.param("sqlite::memory:", r"per connection.*use memory://", id="memory-relative"),
        pytest.param("sqlite:///", r"directory", id="root-itself"),
    ],
)
def test_sqlite_url_traps(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_store(url)
    assert not os.path.exists("/rel.db")


def test_sqlite_relative_from_the_root_directory_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir("/")
    with pytest.raises(ConfigError, match="relative path, and the working directory is /"):
        open_store("sqlite:rel.db")


def test_sqlite_database_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        open_store(f"sqlite://{tmp_path}")
    with pytest.raises(ConfigError, match="is a directory"):
        SQLiteStore(str(tmp_path))


def test_empty_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="valid schemes"):
        open_store("")
