"""Three WSGI nodes, each with its own memory:// store and nothing shared.

A non-sticky balancer sends every request to the next node. The client's
replica is the only thing that carries its session between them.
"""

from __future__ import annotations

from werkzeug.test import Client

from shoal import ManualClock

from ._apps import RoundRobin, dump, memory_node


def test_a_session_survives_every_hop_and_a_node_kill(clock: ManualClock, app_id: str) -> None:
    nodes = [memory_node(clock, app_id) for _ in range(3)]
    balancer = RoundRobin(nodes)
    client = Client(balancer)
    expected: dict[str, str] = {}
    for step in range(12):
        if step == 7:
            nodes[step % 3].restart()  # the node that takes the next request died
        clock.advance(1)
        assert client.get(f"/set?k{step}={step}").status_code == 200
        expected[f"k{step}"] = str(step)
        assert dump(client) == expected, f"after request {step}"
    assert set(balancer.served) == {0, 1, 2}
    # Each node caught up through the replica, never through another node.
    for node in nodes:
        assert len(list(node.manager.store.records(app_id))) == 1


def test_a_node_with_a_stale_copy_does_not_win(clock: ManualClock, app_id: str) -> None:
    """A node that served the session earlier holds an old copy; the newer replica wins."""
    nodes = [memory_node(clock, app_id) for _ in range(3)]
    client = Client(RoundRobin(nodes))
    client.get("/set?cart=1")  # node 0
    client.get("/set?cart=2")  # node 1
    client.get("/set?cart=3")  # node 2
    assert client.get("/get?cart").text == "3"  # node 0 held cart=1
    assert client.get("/get?cart").text == "3"  # node 1 held cart=2


def test_logout_on_one_node_ends_the_session_for_the_client(
    clock: ManualClock, app_id: str
) -> None:
    nodes = [memory_node(clock, app_id) for _ in range(3)]
    client = Client(RoundRobin(nodes))
    client.get("/set?a=1")
    client.get("/logout")
    for _ in range(3):
        assert client.get("/get?a").text == "-"
