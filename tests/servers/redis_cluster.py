"""A private Redis Cluster for the tests: `RedisCluster`.

What: 3 masters (with `replicas=True`, 3 more nodes, one replica each), every
node a `redis-server --cluster-enabled yes` on a free loopback port (and that
port + 10000 free for the cluster bus) in its own dir, joined with
`redis-cli --cluster create ... --cluster-yes`, then waited on until every
node reports `cluster_state:ok`, all slots served and replication links up.
URL: `redis+cluster://127.0.0.1:PORT` naming the first node running now
(`startup_nodes` lists them all).

Why: the cluster store must be tested on a real cluster: keys spread over
masters, and a master crash with its replica taking over
(`kill_master_of(key)` then `wait_for_failover()`); `heal()` restarts the
killed node (it rejoins as a replica) so later tests get a whole cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import resp
from .base import ServerGroup, ServerProcess, run_setup
from .redis_server import RedisServer, find_redis_cli
from .util import HOST, ServerStartError, free_port, wait_until

SLOTS = 16384
BUS_PORT_OFFSET = 10000  # Redis listens for the cluster bus on port + 10000


class RedisClusterNode(RedisServer):
    """A redis-server in cluster mode, its state in DIR/nodes.conf."""

    kind = "redis-cluster-node"

    def __init__(
        self, *, data_dir: Path, node_timeout_ms: int, startup_timeout: float
    ) -> None:
        super().__init__(
            extra_args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
            ],
            data_dir=data_dir,
            startup_timeout=startup_timeout,
        )  # fmt: skip

    def _pick_port(self) -> int:
        return free_port(with_offset=BUS_PORT_OFFSET)


@dataclass
class NodeView:
    """One line of CLUSTER NODES: a node as some node of the cluster sees it."""

    node_id: str
    port: int
    flags: set[str]
    master_id: str | None
    slots: list[tuple[int, int]] = field(default_factory=list)

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    def owns(self, slot: int) -> bool:
        return any(lo <= slot <= hi for lo, hi in self.slots)


def parse_cluster_nodes(text: str) -> list[NodeView]:
    """Parse CLUSTER NODES output (import/migration markers are skipped)."""
    views = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@")[0]
        slots = []
        for spec in parts[8:]:
            if spec.startswith("["):
                continue
            lo, _, hi = spec.partition("-")
            slots.append((int(lo), int(hi or lo)))
        views.append(
            NodeView(
                node_id=parts[0],
                port=int(address.rpartition(":")[2]),
                flags=set(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                slots=slots,
            )
        )
    return views


_BAD_FLAGS = {"fail", "fail?", "handshake", "noaddr"}


class RedisCluster(ServerGroup):
    """A Redis Cluster of `masters` masters, with one replica each if `replicas`."""

    kind = "redis-cluster"

    def __init__(
        self,
        *,
        replicas: bool = False,
        masters: int = 3,
        node_timeout_ms: int = 2000,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.replicas = replicas
        self.cli = find_redis_cli()
        count = masters * (2 if replicas else 1)
        self.nodes = [
            RedisClusterNode(
                data_dir=self.base_dir / f"node{i}",
                node_timeout_ms=node_timeout_ms,
                startup_timeout=startup_timeout,
            )
            for i in range(count)
        ]

    @property
    def members(self) -> list[ServerProcess]:
        return list(self.nodes)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node running now."""
        return [(HOST, n.port) for n in self.nodes if n.running]

    @property
    def url(self) -> str:
        live = self.startup_nodes
        port = live[0][1] if live else self.nodes[0].port
        return f"redis+cluster://{HOST}:{port}"

    def _start_members(self) -> None:
        for node in self.nodes:
            node.start()
        argv = [self.cli, "--cluster", "create"]
        argv += [f"{HOST}:{node.port}" for node in self.nodes]
        if self.replicas:
            argv += ["--cluster-replicas", "1"]
        argv.append("--cluster-yes")
        run_setup(
            argv,
            log=self.base_dir / "cluster-create.log",
            what="redis-cli --cluster create",
            timeout=self.startup_timeout,
        )

    # -- what the cluster looks like now

    def node_at(self, port: int) -> RedisServer:
        """Our node listening on `port`."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def view(self) -> list[NodeView]:
        """CLUSTER NODES as seen by the first node running now."""
        for node in self.nodes:
            if node.running:
                reply = resp.try_command(node.port, "CLUSTER", "NODES")
                if isinstance(reply, str):
                    return parse_cluster_nodes(reply)
        raise ServerStartError(f"no node of {self!r} answers")

    def master_ports(self) -> list[int]:
        """Ports of the masters serving slots, as the cluster sees it now."""
        return sorted(v.port for v in self.view() if v.is_master and v.slots)

    def replica_ports(self) -> list[int]:
        return sorted(v.port for v in self.view() if "slave" in v.flags)

    def key_slot(self, key: str) -> int:
        """The hash slot of `key` (asked of a running node)."""
        port = self.startup_nodes[0][1]
        slot = resp.command(port, "CLUSTER", "KEYSLOT", key)
        assert isinstance(slot, int)
        return slot

    def master_of(self, key: str) -> RedisServer:
        """The node that is master of `key`'s slot now."""
        slot = self.key_slot(key)
        for view in self.view():
            if view.is_master and view.owns(slot):
                return self.node_at(view.port)
        raise ServerStartError(f"no master serves slot {slot} of {key!r}")

    # -- crashes

    def kill_node(self, port: int) -> RedisServer:
        """SIGKILL the node on `port`; returns it (restart it or `heal()`)."""
        node = self.node_at(port)
        node.kill()
        return node

    def kill_master_of(self, key: str) -> RedisServer:
        """SIGKILL the master of `key`'s slot; returns the killed node."""
        node = self.master_of(key)
        node.kill()
        return node

    def wait_for_failover(self, timeout: float | None = None) -> None:
        """Wait until the killed masters' slots are served by promoted replicas.

        Bounded by `timeout` (default: startup_timeout). Needs `replicas=True`:
        without replicas a killed master's slots come back only with `heal()`.
        """
        if not self.replicas:
            raise ServerStartError(
                "a cluster without replicas cannot fail over; heal() it"
            )
        wait_until(
            lambda: self._serving(require_replicas=False),
            timeout=self.startup_timeout if timeout is None else timeout,
            what=f"{self!r} to fail over",
            interval=0.1,
            details=self.describe,
        )

    # -- health

    def healthy(self) -> bool:
        return self._serving(require_replicas=self.replicas)

    def _serving(self, *, require_replicas: bool) -> bool:
        """Every running node sees cluster_state:ok, all slots on live masters,
        no running node flagged failed, and the same roles as every other
        running node; with require_replicas, every master has a running
        replica whose link is up."""
        live = {n.port for n in self.nodes if n.running}
        if not live:
            return False
        pictures = set()
        views: list[NodeView] = []
        for port in sorted(live):
            cinfo = resp.try_command(port, "CLUSTER", "INFO")
            nodes = resp.try_command(port, "CLUSTER", "NODES")
            if not isinstance(cinfo, str) or not isinstance(nodes, str):
                return False
            fields = resp.parse_info(cinfo)
            if (
                fields.get("cluster_state") != "ok"
                or fields.get("cluster_slots_assigned") != str(SLOTS)
                or fields.get("cluster_known_nodes") != str(len(self.nodes))
            ):
                return False
            views = parse_cluster_nodes(nodes)
            for view in views:
                if view.port in live and view.flags & _BAD_FLAGS:
                    return False
                if view.slots and (view.port not in live or not view.is_master):
                    return False
            pictures.add(
                tuple(
                    sorted(
                        (v.port, v.is_master, v.master_id or "", tuple(v.slots))
                        for v in views
                        if v.port in live
                    )
                )
            )
        if len(pictures) != 1:  # the nodes do not agree yet
            return False
        if not require_replicas:
            return True
        for view in views:  # all views agree by now: check one
            if not (view.is_master and view.slots):
                continue
            if not any(
                r.master_id == view.node_id and r.port in live and self._link_up(r.port)
                for r in views
            ):
                return False
        return True

    @staticmethod
    def _link_up(port: int) -> bool:
        reply = resp.try_command(port, "INFO", "replication")
        if not isinstance(reply, str):
            return False
        fields = resp.parse_info(reply)
        return (
            fields.get("role") == "slave" and fields.get("master_link_status") == "up"
        )

    def describe(self) -> str:
        lines = []
        for node in self.nodes:
            state = "running" if node.running else "stopped"
            reply = (
                resp.try_command(node.port, "CLUSTER", "NODES")
                if node.running
                else None
            )
            lines.append(f"node {node.port} ({state}) sees:\n{reply}")
        return "\n".join(lines)
