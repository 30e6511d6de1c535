"""``shoal demo``, the live cluster: the node app in-process, then the real command.

The command runs as ``python -m shoal.cli demo --no-browser --port 0`` with
real node processes and a real SQLite file under the test's tmp dir; every
request and every wait is bounded by a timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from werkzeug.test import Client, TestResponse

from shoal import ManualClock
from shoal.cli import main
from shoal.cli._cluster_app import BURST, LOGIN_TTL, NodeApp
from shoal.cli.demo import _open_browser
from shoal.cookies import CookieOptions

from ._live_demo import TIMEOUT, demo_env, live_demo

KEY = "k" * 20 + "ey-for-the-node-app-tests"
JSON = {"Accept": "application/json"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def node(clock: ManualClock) -> NodeApp:
    return NodeApp(
        "memory://", app_id="demo", node_id="node-7", secret_keys=[KEY], nodes=["node-7"],
        clock=clock,
    )


def state(response: TestResponse) -> Any:
    assert response.status_code == 200, response.get_data(as_text=True)
    return orjson.loads(response.get_data())


def test_page_names_the_node_and_counts_visits(node: NodeApp) -> None:
    client = Client(node)
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert 'name="viewport"' in text and "node-7" in text
    assert state(client.get("/state.json"))["visits"] == 1
    client.get("/")
    answer = state(client.get("/state.json"))
    assert answer["node"] == "node-7" and answer["visits"] == 2
    cookie = client.get_cookie(CookieOptions().name)
    assert cookie is not None
    assert cookie.value not in text and len(answer["session"]) == 12  # a hash ref, never the id


def test_head_answers_as_get_without_a_body_or_a_visit(node: NodeApp) -> None:
    # curl -I, uptime probes: a HEAD of the page is a 200 like its GET, with
    # no body and no visit counted (it changes nothing).
    client = Client(node)
    client.get("/")
    for path in ("/", "/state.json"):
        head = client.head(path)
        assert head.status_code == 200, path
        assert head.get_data() == b""
        assert int(head.headers["Content-Length"]) > 0
    assert state(client.get("/state.json"))["visits"] == 1


def test_sign_in_rotates_and_expires_while_the_cart_stays(
    node: NodeApp, clock: ManualClock
) -> None:
    client = Client(node)
    state(client.post("/cart", data={"item": "apple"}, headers=JSON))
    before = client.get_cookie(CookieOptions().name)
    signed = state(client.post("/login", data={"user": "alice"}, headers=JSON))
    assert signed["user"]["name"] == "alice"
    assert signed["user"]["until"] == clock() + LOGIN_TTL
    after = client.get_cookie(CookieOptions().name)
    assert before is not None and after is not None and after.value != before.value
    assert state(client.get("/state.json"))["cart"] == ["apple"]
    clock.advance(LOGIN_TTL - 1)
    assert state(client.get("/state.json"))["user"]["name"] == "alice"
    clock.advance(2)
    later = state(client.get("/state.json"))
    assert later["user"] is None and later["data"] == {"cart": ["apple"]}


def test_forms_without_javascript_redirect_to_the_page(node: NodeApp) -> None:
    client = Client(node)
    answer = client.post("/cart", data={"item": "pear"}, headers={"Accept": "text/html"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    assert state(client.get("/state.json"))["cart"] == ["pear"]
    assert state(client.post("/logout", headers=JSON))["cart"] == []
    assert client.post("/cart", headers=JSON).status_code == 400
    assert client.get("/nowhere").status_code == 404


@pytest.mark.parametrize("policy", ["lossy", "merge", "optimistic", "serialized"])
def test_race_routes(node: NodeApp, policy: str) -> None:
    client = Client(node)
    assert state(client.post(f"/race/{policy}/start", headers=JSON))["count"] == 0
    for n in range(3):
        client.post(f"/race/{policy}/hit?n={n}", headers=JSON)
    assert state(client.get(f"/race/{policy}/count"))["count"] == 3
    assert client.get("/race/nonsense/count").status_code == 404


# -- the command, for real ------------------------------------------------------------


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_round_robin_then_a_signal_stops_every_child(
    tmp_path: Path, stop: signal.Signals
) -> None:
    with live_demo(tmp_path, "--nodes", "3") as demo:
        pids = demo.child_pids()
        assert len(pids) == 3
        served = [demo.request("GET", "/state.json")["node"] for _ in range(3)]
        assert sorted(served) == ["node-1", "node-2", "node-3"]  # consecutive: all different
        demo.process.send_signal(stop)
        assert demo.process.wait(timeout=TIMEOUT) == 0
        assert demo.process.stderr is not None and demo.process.stderr.read() == ""
    for pid in pids:
        assert gone(pid), f"node pid {pid} outlived the demo"


def test_a_dead_node_a_flushed_store_and_the_race(tmp_path: Path) -> None:
    with live_demo(tmp_path, "--nodes", "3") as demo:
        demo.request("POST", "/cart", item="apple")
        demo.request("POST", "/login", user="alice")
        ref = demo.request("GET", "/state.json")["session"]

        status = demo.request("POST", "/_demo/nodes/node-2/kill")
        assert [n["up"] for n in status["nodes"]] == [True, False, True]
        seen = {demo.request("POST", "/cart", item=f"i{n}")["node"] for n in range(4)}
        assert seen == {"node-1", "node-3"}  # the front skips the dead node
        now = demo.request("GET", "/state.json")
        assert now["session"] == ref and now["cart"] == ["apple", "i0", "i1", "i2", "i3"]
        assert now["user"]["name"] == "alice"
        status = demo.request("POST", "/_demo/nodes/node-2/start")
        assert all(n["up"] for n in status["nodes"])

        assert demo.request("POST", "/_demo/flush")["deleted"] >= 1
        assert demo.status()["records"] == 0
        back = demo.request("GET", "/state.json")  # brings the replica: written back
        assert back["session"] == ref and back["cart"] == now["cart"]
        assert demo.status()["records"] == 1

        race = demo.request("POST", "/_demo/race")
        kept = {r["policy"]: r["count"] for r in race["results"]}
        assert kept["merge"] == kept["optimistic"] == kept["serialized"] == BURST
        assert 0 < kept["lossy"] <= BURST and race["errors"] == 0
        assert demo.status()["race"] == race

        # 200 concurrent requests, each sending events: no node reports one missed
        # (a false report clears the near cache and fills the user's terminal)
        demo.process.send_signal(signal.SIGTERM)
        assert demo.process.wait(timeout=TIMEOUT) == 0
        assert demo.process.stderr is not None
        assert "missed" not in demo.process.stderr.read()


def test_the_default_store_is_the_embedded_sqlite_file(tmp_path: Path) -> None:
    """The README's first command: no --store, no SHOAL_STORE."""
    with live_demo(tmp_path, "--nodes", "2", default_store=True) as demo:
        assert f"store sqlite://{tmp_path}/data/sessions.db, app demo" in demo.banner
        demo.request("POST", "/cart", item="apple")
        assert demo.request("GET", "/state.json")["cart"] == ["apple"]
        assert demo.status()["records"] == 1
    assert (tmp_path / "data" / "sessions.db").is_file()


def exited(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever adopted it (the process has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_demo_killed_outright_leaves_no_node_behind(tmp_path: Path) -> None:
    with live_demo(tmp_path, "--nodes", "2") as demo:
        pids = demo.child_pids()
        demo.process.kill()  # no chance to stop anything: the nodes see their stdin close
        demo.process.wait(timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while not all(exited(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(exited(pid) for pid in pids), "a node outlived a killed demo"


def test_a_busy_port_is_one_line_naming_the_option(tmp_path: Path) -> None:
    """Port 8000 is often taken: say so and how to choose another, start no node."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "shoal.cli", "demo", "--no-browser", "--port", str(port),
             "--store", f"sqlite:///{tmp_path}/demo.db"],
            env=demo_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_json_is_for_the_script_only() -> None:
    result = CliRunner().invoke(main, ["demo", "--json"])
    assert result.exit_code == 2 and "--script" in result.stderr


def test_no_browser_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(url: str) -> bool:
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "open", broken)
    _open_browser("http://127.0.0.1:1/")  # no exception


def test_every_node_shows_the_session_events_of_every_other(tmp_path: Path) -> None:
    with live_demo(tmp_path, "--nodes", "3") as demo:
        demo.request("POST", "/cart", item="apple")  # a session to sign in to
        signed_in = demo.request("POST", "/login", user="alice")  # one node rotates the id
        rotator = signed_in["node"]
        deadline = time.monotonic() + TIMEOUT
        heard_by: set[str] = set()
        while heard_by != {"node-1", "node-2", "node-3"} and time.monotonic() < deadline:
            now = demo.request("GET", "/state.json")  # the next node of the round robin
            rotations = [e for e in now["events"] if e["event"] == "rotated"]
            if rotations:
                assert len(rotations) == 1 and rotations[0]["node_id"] == rotator
                heard_by.add(now["node"])
        assert heard_by == {"node-1", "node-2", "node-3"}


def test_log_out_everywhere_ends_the_other_devices_session(node: NodeApp) -> None:
    laptop, phone = Client(node), Client(node)  # two cookie jars: two devices
    state(laptop.post("/cart", data={"item": "apple"}, headers=JSON))
    anonymous = laptop.get_cookie(CookieOptions().name)
    assert anonymous is not None
    state(laptop.post("/login", data={"user": "ada"}, headers=JSON))
    state(phone.post("/login", data={"user": "ada", "device": "phone"}, headers=JSON))
    seen = state(laptop.get("/state.json"))
    assert seen["principal"] == "ada"
    assert sorted((d["device"], d["this"]) for d in seen["devices"]) == [
        ("a browser", True), ("phone", False),
    ]
    # the pre-login id ended with the sign-in: it opens nothing
    stale = Client(node)
    stale.set_cookie(CookieOptions().name, anonymous.value)
    assert state(stale.get("/state.json"))["cart"] == []
    assert state(laptop.post("/logout-everywhere", headers=JSON))["principal"] is None
    assert laptop.get_cookie(CookieOptions().name) is None  # this browser's cookie cleared
    other = state(phone.get("/state.json"))
    assert other["principal"] is None and other["user"] is None and other["devices"] == []
    assert node.manager.sessions_of("ada") == []


def test_the_devices_panel_is_on_the_page(node: NodeApp) -> None:
    client = Client(node)
    page = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert 'id="devices-panel"' in page and "nobody (sign in first)" in page
    client.post("/login", data={"user": "ada"}, headers=JSON)
    page = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert 'id="devices-user">ada<' in page and "\u2014 this browser</li>" in page
    answer = client.post("/logout-everywhere", headers={"Accept": "text/html"})
    assert answer.status_code == 303
