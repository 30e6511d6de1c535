"""Checks of the private test servers themselves, through real clients.

Each server kind starts, answers its client (redis-py, psycopg, pymysql),
and comes back after a SIGKILL on the same port; the cluster spreads keys
over its masters and fails over to a replica; the sentinels promote the
replica. Every test leaves its (session-shared) server running and whole.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.servers.availability import redis_unavailable, skip_or_fail
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.redis_cluster import RedisCluster
from tests.servers.redis_sentinel import RedisSentinel
from tests.servers.redis_server import RedisServer
from tests.servers.util import RESERVED_PORTS, ServerStartError, can_connect, free_port


def test_free_ports_are_distinct_and_never_the_system_servers() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    assert not set(ports) & RESERVED_PORTS
    bus = free_port(with_offset=10000)
    assert bus + 10000 <= 65535


def test_skip_or_fail_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no such server"):
        skip_or_fail("no such server")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no such server"):
        skip_or_fail("no such server")


def _assert_crashed(port: int) -> None:
    assert not can_connect(port), f"something still answers on {port}"


def test_redis_server_answers_and_survives_a_crash(redis_server: RedisServer) -> None:
    redis = pytest.importorskip("redis")
    port = redis_server.port
    assert redis_server.url == f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
    finally:
        client.close()

    first_pid = redis_server.pid
    redis_server.kill()
    assert redis_server.pid is None
    _assert_crashed(port)
    redis_server.restart()
    assert redis_server.port == port
    assert redis_server.pid not in (None, first_pid)

    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping()
        assert client.get("greeting") is None  # persistence is off: a crash loses data
    finally:
        client.close()


def _need_redis() -> None:
    reason = redis_unavailable()
    if reason is not None:
        skip_or_fail(reason)


def test_context_manager_removes_its_data_dir() -> None:
    _need_redis()
    with RedisServer() as server:
        data_dir = server.data_dir
        assert server.running and data_dir.is_dir()
    assert not server.running
    assert not Path(data_dir).exists()


def _keys_per_master(cluster: RedisCluster) -> dict[int, str]:
    """One key for each master port."""
    masters = cluster.master_ports()
    found: dict[int, str] = {}
    for i in range(1000):
        key = f"key:{i}"
        found.setdefault(cluster.master_of(key).port, key)
        if len(found) == len(masters):
            return found
    raise AssertionError(f"no key found for every master of {masters}")


def test_redis_cluster_spreads_keys_and_fails_over(redis_cluster: RedisCluster) -> None:
    redis = pytest.importorskip("redis")
    ClusterClient = pytest.importorskip("redis.cluster").RedisCluster

    assert len(redis_cluster.master_ports()) == 3
    assert len(redis_cluster.replica_ports()) == 3
    host, port = redis_cluster.startup_nodes[0]
    assert redis_cluster.url == f"redis+cluster://{host}:{port}"

    keys = _keys_per_master(redis_cluster)
    client = ClusterClient(host=host, port=port)
    try:
        for master_port, key in keys.items():
            client.set(key, f"on {master_port}")
        for master_port, key in keys.items():
            assert client.get(key) == f"on {master_port}".encode()
    finally:
        client.close()
    for master_port, key in keys.items():  # each key really lives on its master
        direct = redis.Redis(host=host, port=master_port)
        try:
            assert direct.get(key) == f"on {master_port}".encode()
            assert direct.execute_command("WAIT", 1, 2000) == 1  # replicated
        finally:
            direct.close()

    victim_port, victim_key = next(iter(keys.items()))
    killed = redis_cluster.kill_master_of(victim_key)
    assert killed.port == victim_port and not killed.running
    redis_cluster.wait_for_failover()
    assert victim_port not in redis_cluster.master_ports()

    host, port = redis_cluster.startup_nodes[0]
    client = ClusterClient(host=host, port=port)
    try:
        assert client.get(victim_key) == f"on {victim_port}".encode()
    finally:
        client.close()

    redis_cluster.heal()
    assert killed.port in redis_cluster.replica_ports()


def test_redis_sentinel_finds_the_master_and_fails_over(
    redis_sentinel: RedisSentinel,
) -> None:
    Sentinel = pytest.importorskip("redis.sentinel").Sentinel

    hosts = ",".join(f"{h}:{p}" for h, p in redis_sentinel.sentinel_addresses)
    assert redis_sentinel.url == f"redis+sentinel://{hosts}/mymaster"

    def write_and_read(value: str | None) -> bytes | None:
        sentinel = Sentinel(redis_sentinel.sentinel_addresses, socket_timeout=2)
        master = sentinel.master_for("mymaster", socket_timeout=2)
        try:
            if value is not None:
                master.set("k", value)
                assert master.execute_command("WAIT", 1, 2000) == 1
            result: bytes | None = master.get("k")
            return result
        finally:
            master.close()
            for connection in sentinel.sentinels:
                connection.close()

    assert write_and_read("before") == b"before"
    old = redis_sentinel.kill_master()
    new = redis_sentinel.wait_for_failover()
    assert new.port != old.port
    assert write_and_read(None) == b"before"  # the replica had it
    redis_sentinel.heal()
    assert redis_sentinel.current_master() is new
    assert write_and_read("after") == b"after"


def test_postgres_answers_and_survives_a_crash(postgres_server: PostgresServer) -> None:
    psycopg = pytest.importorskip("psycopg")
    port = postgres_server.port
    assert postgres_server.url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")  # the server default is off
        conn.execute("DROP TABLE IF EXISTS crash_probe")
        conn.execute("CREATE TABLE crash_probe (v text)")
        conn.execute("INSERT INTO crash_probe VALUES ('kept')")

    postgres_server.kill()
    assert postgres_server.pid is None
    _assert_crashed(port)
    postgres_server.restart()
    assert postgres_server.port == port

    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        rows = conn.execute("SELECT v FROM crash_probe").fetchall()
        conn.execute("DROP TABLE crash_probe")
    assert rows == [("kept",)]


def test_mariadb_answers_and_survives_a_crash(mariadb_server: MariaDBServer) -> None:
    pymysql = pytest.importorskip("pymysql")
    port = mariadb_server.port
    assert mariadb_server.url == f"mysql://root@127.0.0.1:{port}/test"

    def run(*statements: str) -> list[tuple[object, ...]]:
        conn = pymysql.connect(
            host="127.0.0.1", port=port, user="root", database="test", autocommit=True
        )
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
                return list(cursor.fetchall())
        finally:
            conn.close()

    run(
        "DROP TABLE IF EXISTS crash_probe",
        "CREATE TABLE crash_probe (v VARCHAR(10)) ENGINE=InnoDB",
        "INSERT INTO crash_probe VALUES ('kept')",
    )
    mariadb_server.kill()
    assert mariadb_server.pid is None
    _assert_crashed(port)
    mariadb_server.restart()
    assert mariadb_server.port == port
    assert run("SELECT v FROM crash_probe") == [("kept",)]
    run("DROP TABLE crash_probe")


def test_a_taken_port_is_reported_with_the_log_tail() -> None:
    _need_redis()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        server = RedisServer(port=taken, startup_timeout=5)
        try:
            with pytest.raises(ServerStartError, match="exited with code") as info:
                server.start()
            assert "Address already in use" in str(info.value)
            assert not server.running
        finally:
            server.cleanup()
