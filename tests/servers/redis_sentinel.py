"""A private Redis Sentinel setup for the tests: `RedisSentinel`.

What: a master redis-server, with `replica=True` (the default) a replica of
it, and 2 sentinels (`redis-server sentinel.conf --sentinel`, built into
every redis-server, so no separate redis-sentinel package is needed)
monitoring the master as `mymaster` with quorum 1, each on a free loopback
port in its own dir. Start returns once every sentinel knows the master, the
replica and the other sentinel, so a failover can happen at once.

URL shape assumed for the library (documented here, parsed there):
    redis+sentinel://127.0.0.1:S1,127.0.0.1:S2/mymaster
i.e. comma-separated host:port of the sentinels, then the master's service
name as the path; database 0 is implied.

Why: the sentinel store must be tested on real sentinels: discovery of the
master, and a master crash (`kill_master()`) after which the sentinels
promote the replica (`wait_for_failover()`); `heal()` restarts the killed
node, which the sentinels turn into a replica of the new master.
"""

from __future__ import annotations

from pathlib import Path

from . import resp
from .base import ServerGroup, ServerProcess
from .redis_server import RedisServer, find_redis_server
from .util import HOST, ServerStartError, wait_until


class SentinelProcess(ServerProcess):
    """One sentinel; its config (which it rewrites with what it learns) in its dir."""

    kind = "redis-sentinel"

    def __init__(
        self,
        *,
        master: RedisServer,
        master_name: str,
        data_dir: Path,
        down_after_ms: int,
        failover_timeout_ms: int,
        startup_timeout: float,
    ) -> None:
        self.binary = find_redis_server()
        self.master = master
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        super().__init__(data_dir=data_dir, startup_timeout=startup_timeout)
        self.conf_path = self.data_dir / "sentinel.conf"

    @property
    def url(self) -> str:
        return f"redis+sentinel://{HOST}:{self.port}/{self.master_name}"

    def _prepare(self) -> None:
        name = self.master_name
        self.conf_path.write_text(
            f"port {self.port}\n"
            f"bind {HOST}\n"
            "daemonize no\n"
            'logfile ""\n'
            f"dir {self.data_dir}\n"
            f"sentinel monitor {name} {HOST} {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )

    def _command(self) -> list[str]:
        # --port after the file wins over it, should a retry pick a new port.
        return [
            self.binary,
            str(self.conf_path),
            "--sentinel",
            "--port",
            str(self.port),
        ]

    def _ping(self) -> bool:
        return resp.ping(self.port)

    def master_state(self) -> dict[str, str] | None:
        """SENTINEL MASTER <name> as a dict, or None if this sentinel is unreachable."""
        reply = resp.try_command(self.port, "SENTINEL", "MASTER", self.master_name)
        if not isinstance(reply, list):
            return None
        return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2])}

    def master_port(self) -> int | None:
        """The master's port as this sentinel reports it now."""
        reply = resp.try_command(
            self.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
        )
        if isinstance(reply, list) and len(reply) == 2:
            return int(str(reply[1]))
        return None

    def configured_master_port(self) -> int | None:
        """The master's port in this sentinel's config file (it rewrites it
        on every failover), or None if unreadable."""
        prefix = f"sentinel monitor {self.master_name} "
        try:
            lines = self.conf_path.read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            if line.startswith(prefix):
                return int(line.split()[4])
        return None

    def replica_ports(self) -> dict[int, str]:
        """Port -> flags of the replicas this sentinel knows."""
        reply = resp.try_command(self.port, "SENTINEL", "REPLICAS", self.master_name)
        out: dict[int, str] = {}
        if isinstance(reply, list):
            for entry in reply:
                if isinstance(entry, list):
                    fields = {str(k): str(v) for k, v in zip(entry[::2], entry[1::2])}
                    out[int(fields["port"])] = fields.get("flags", "")
        return out


class RedisSentinel(ServerGroup):
    """A master (+ a replica) watched by `sentinels` sentinels as `master_name`."""

    kind = "redis-sentinel-set"

    def __init__(
        self,
        *,
        replica: bool = True,
        sentinels: int = 2,
        master_name: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.master_name = master_name
        self.master = RedisServer(
            data_dir=self.base_dir / "master", startup_timeout=startup_timeout
        )
        self.replica = (
            RedisServer(
                data_dir=self.base_dir / "replica", startup_timeout=startup_timeout
            )
            if replica
            else None
        )
        self.sentinels = [
            SentinelProcess(
                master=self.master,
                master_name=master_name,
                data_dir=self.base_dir / f"sentinel{i}",
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
                startup_timeout=startup_timeout,
            )
            for i in range(sentinels)
        ]

    @property
    def redis_nodes(self) -> list[RedisServer]:
        """The data nodes: the first master, then the replica if any."""
        return [self.master] + ([self.replica] if self.replica else [])

    @property
    def members(self) -> list[ServerProcess]:
        return [*self.redis_nodes, *self.sentinels]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(HOST, s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{self.master_name}"

    def _start_members(self) -> None:
        self.master.start()
        if self.replica is not None:
            self.replica.extra_args = ["--replicaof", HOST, str(self.master.port)]
            self.replica.start()
            # Sentinels learn replicas from the master's INFO: link up first.
            wait_until(
                lambda: _role(self.replica_or_fail.port) == ("slave", "up"),
                timeout=self.startup_timeout,
                what="the replica to sync with the master",
                details=self.describe,
            )
        for sentinel in self.sentinels:
            sentinel.start()

    @property
    def replica_or_fail(self) -> RedisServer:
        if self.replica is None:
            raise ServerStartError(f"{self!r} has no replica")
        return self.replica

    # -- what it looks like now

    def master_port(self) -> int | None:
        """The master's port if all running sentinels agree on it, else None."""
        ports = {s.master_port() for s in self.sentinels if s.running}
        return ports.pop() if len(ports) == 1 else None

    def current_master(self) -> RedisServer:
        """Our node the sentinels name as master now."""
        port = self.master_port()
        for node in self.redis_nodes:
            if node.port == port:
                return node
        raise ServerStartError(f"sentinels of {self!r} do not agree on a master")

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master; returns it (restart it or `heal()`)."""
        node = self.current_master()
        node.kill()
        return node

    def _known_master_port(self) -> int:
        """The master's port per the running sentinels, else per the config
        the sentinels rewrote when they last changed it, else the first one."""
        port = self.master_port()
        if port is not None:
            return port
        for sentinel in self.sentinels:
            port = sentinel.configured_master_port()
            if port is not None:
                return port
        return self.master.port

    def _start_data_nodes(self, master_port: int) -> None:
        """Start the stopped data nodes: the one on `master_port` as master,
        the others as its replicas, as an operator's config would have them
        (a node left to come back as a master takes the sentinels 10 s or
        more to demote)."""
        nodes = sorted(self.redis_nodes, key=lambda n: n.port != master_port)
        for node in nodes:  # the master first, so its replicas find it
            if node.running:
                continue
            if node.port == master_port:
                node.extra_args = []
            else:
                node.extra_args = ["--replicaof", HOST, str(master_port)]
            node.start()

    def heal(self) -> None:
        """Restart killed members (data nodes as replicas of the current
        master), wait until healthy."""
        self._start_data_nodes(self._known_master_port())
        for sentinel in self.sentinels:
            sentinel.ensure_running()
        self.wait_healthy()

    def restart(self) -> None:
        """Stop everything, start it again with the current master as master."""
        master_port = self._known_master_port()
        self.stop()
        self._start_data_nodes(master_port)
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_healthy()

    def wait_for_failover(self, timeout: float | None = None) -> RedisServer:
        """Wait (bounded) until the sentinels name a running master; return it."""
        if self.replica is None:
            raise ServerStartError(
                "a sentinel set without replica cannot fail over; heal() it"
            )
        wait_until(
            lambda: self._serving(require_replicas=False),
            timeout=self.startup_timeout if timeout is None else timeout,
            what=f"{self!r} to fail over",
            interval=0.1,
            details=self.describe,
        )
        return self.current_master()

    # -- health

    def healthy(self) -> bool:
        return self._serving(require_replicas=self.replica is not None)

    def _serving(self, *, require_replicas: bool) -> bool:
        """The sentinels agree on a running master that says role:master, see it
        as up and see each other; with require_replicas, every other running
        data node replicates from it and the sentinels see it up."""
        port = self.master_port()
        live = {n.port for n in self.redis_nodes if n.running}
        if port is None or port not in live or _role(port)[0] != "master":
            return False
        running = [s for s in self.sentinels if s.running]
        for sentinel in running:
            state = sentinel.master_state()
            if (
                state is None
                or state.get("flags") != "master"
                or state.get("num-other-sentinels") != str(len(running) - 1)
            ):
                return False
        if not require_replicas:
            return True
        for replica_port in live - {port}:
            if _role(replica_port) != ("slave", "up"):
                return False
            if any(s.replica_ports().get(replica_port) != "slave" for s in running):
                return False
        return True

    def describe(self) -> str:
        lines = [f"data nodes: {[(n.port, n.running) for n in self.redis_nodes]}"]
        for sentinel in self.sentinels:
            lines.append(f"sentinel {sentinel.port}: {sentinel.master_state()}")
        return "\n".join(lines)


def _role(port: int) -> tuple[str, str]:
    """(role, master_link_status) of the redis at `port`; ("", "") if unreachable."""
    reply = resp.try_command(port, "INFO", "replication")
    if not isinstance(reply, str):
        return ("", "")
    fields = resp.parse_info(reply)
    return (fields.get("role", ""), fields.get("master_link_status", ""))
