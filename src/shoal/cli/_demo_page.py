"""The page of ``shoal demo``: one HTML document, its stylesheet and a little script.

The server renders the session panel, so signing in, the cart and the node
and store buttons work without JavaScript (form posts, answered with a 303).
The script makes the page live: it polls ``/state.json`` (answered by
whichever node the front picks) and the front's ``/_demo/status`` once a
second, and sends the forms with ``fetch``. No framework, no build step.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import orjson

from ._demo_devices import DEVICES_SCRIPT, DEVICES_STYLE, render_devices

__all__ = ["render_page"]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


STYLE = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,sans-serif;color:#1d2733;background:#f3f5f8}
header{padding:.8rem 1rem;background:#17324d;color:#fff}
header h1{margin:0;font-size:1.2rem}
header p{margin:.2rem 0 0;opacity:.85}
main{display:grid;gap:1rem;padding:1rem;align-items:start;
  grid-template-columns:repeat(auto-fit,minmax(19rem,1fr))}
section{background:#fff;border-radius:.5rem;padding:.8rem 1rem;box-shadow:0 1px 3px #0002}
h2{margin:0 0 .5rem;font-size:1.05rem}
dl{display:grid;grid-template-columns:auto 1fr;gap:.2rem .8rem;margin:0 0 .6rem}
dt{color:#5a6878}dd{margin:0;overflow-wrap:anywhere}
form{display:flex;flex-wrap:wrap;gap:.4rem;margin:.4rem 0}
input{flex:1 1 8rem;min-width:0;padding:.35rem .5rem;border:1px solid #b8c2cc;
  border-radius:.3rem;font:inherit}
button{padding:.35rem .8rem;border:0;border-radius:.3rem;background:#2a6fb0;color:#fff;
  font:inherit;cursor:pointer}
button.danger{background:#b3402a}button:disabled{background:#aab4be;cursor:default}
table{width:100%;border-collapse:collapse}
td,th{padding:.25rem .4rem;border-bottom:1px solid #e3e7ec;text-align:left}
pre{margin:.4rem 0 0;padding:.5rem;background:#f3f5f8;border-radius:.3rem;overflow:auto;
  font-size:.85rem}
.node{font-weight:700;color:#17324d}.up{color:#1d7a35}.down{color:#b3402a}
.ok{color:#1d7a35;font-weight:700}.lost{color:#b3402a;font-weight:700}
.note{color:#5a6878;font-size:.85rem;margin:.4rem 0 0}
#error{color:#b3402a;min-height:1.2em;margin:0}
#events{margin:0;padding:0;list-style:none;font:.8rem/1.5 ui-monospace,monospace;
  max-height:16rem;overflow:auto}
#events li{border-bottom:1px solid #e3e7ec;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
#events .invalidated,#events .expired,#events .conflict{color:#b3402a}
#events .created,#events .restored{color:#1d7a35}
.node,.kept,.state{white-space:nowrap}
td form{display:inline-flex;margin:0 .3rem 0 0}
@media (max-width:30rem){main{padding:.5rem;gap:.6rem}section{padding:.6rem .7rem}
td,th{padding:.25rem .2rem}button{padding:.35rem .6rem}}
footer{padding:0 1rem 1rem;color:#5a6878;font-size:.85rem}
"""

SCRIPT = """
const $ = (id) => document.getElementById(id);
const text = (id, value) => { $(id).textContent = value; };
async function call(url, options = {}) {
  const response = await fetch(url, {
    headers: {Accept: "application/json"}, signal: AbortSignal.timeout(options.timeout || 5000),
    method: options.method || "GET", body: options.body,
  });
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.json();
}
function showState(s) {
  text("node", s.node); text("served-by", s.node + " (pid " + s.pid + ")");
  text("session-ref", s.session || "none yet");
  text("visits", s.visits);
  text("user", s.user ? s.user.name + " \\u2014 expires in " +
    Math.max(0, Math.ceil(s.user.until - s.now)) + " s" : "not signed in");
  text("cart", s.cart.length ? s.cart.join(", ") : "empty");
  text("restored", s.restored + " by " + s.node);
  text("data", JSON.stringify(s.data, null, 1));
  showEvents(s.events || [], s.node);
  showDevices(s);
}
function showEvents(events, node) {
  const list = $("events");
  list.replaceChildren();
  for (const e of events) {
    const item = document.createElement("li");
    item.className = "event " + e.event;
    const when = new Date(e.time * 1000).toLocaleTimeString();
    const extra = Object.entries(e.detail || {}).map(([k, v]) => k + "=" + v).join(" ");
    item.textContent = when + "  " + e.event + "  " + e.ref + "  from " + e.node_id +
      (extra ? "  " + extra : "");
    list.append(item);
  }
  text("events-note", "as heard by " + node + ": its own events and every other node's, " +
    "through the store");
}
function showStatus(st) {
  for (const n of st.nodes) {
    const row = document.querySelector('tr[data-node="' + n.id + '"]');
    if (!row) continue;
    const state = row.querySelector(".state");
    state.textContent = n.up ? "up" : "down"; state.className = "state " + (n.up ? "up" : "down");
    row.querySelector(".served").textContent = n.served;
    row.querySelector(".kill").disabled = !n.up;
    row.querySelector(".start").disabled = n.up;
  }
  text("records", st.records);
  if (st.race) showRace(st.race);
}
function showRace(race) {
  const body = $("race-results");
  body.replaceChildren();
  for (const r of race.results) {
    const row = body.insertRow();
    row.dataset.policy = r.policy;
    row.insertCell().textContent = r.policy;
    row.insertCell().textContent = r.workload;
    const kept = row.insertCell(); kept.className = "kept " + (r.exact ? "ok" : "lost");
    kept.textContent = r.count + " / " + r.expected;
    row.insertCell().textContent = r.exact ? "exact" : (r.expected - r.count) + " lost";
  }
  text("race-note", "ran in " + race.seconds.toFixed(1) + " s" +
    (race.errors ? ", " + race.errors + " requests failed" : ""));
}
let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    showState(await call("/state.json"));
    showStatus(await call("/_demo/status"));
    text("error", "");
  } catch (error) {
    text("error", "no answer: " + error.message);
  } finally {
    busy = false;
  }
}
for (const form of document.querySelectorAll("form")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const answer = await call(form.action, {method: "POST",
        body: new URLSearchParams(new FormData(form)),
        timeout: Number(form.dataset.timeout || 10000)});
      if (answer.results) showRace(answer);
      if (form.querySelector("input")) form.reset();
      text("error", "");
    } catch (error) {
      text("error", "failed: " + error.message);
    } finally {
      button.disabled = false;
      await refresh();
    }
  });
}
refresh();
setInterval(refresh, 1000);
"""


def _node_rows(nodes: Sequence[str]) -> str:
    rows = []
    for node in nodes:
        n = _e(node)
        rows.append(
            f'<tr data-node="{n}"><td class="node">{n}</td><td class="state">?</td>'
            f'<td class="served">-</td><td>'
            f'<form method="post" action="/_demo/nodes/{n}/kill">'
            f'<button class="danger kill" id="kill-{n}">kill</button></form>'
            f'<form method="post" action="/_demo/nodes/{n}/start">'
            f'<button class="start" id="start-{n}">restart</button></form></td></tr>'
        )
    return "".join(rows)


def _event_rows(events: Sequence[dict[str, Any]]) -> str:
    return "".join(
        f'<li class="event {_e(e["event"])}">{_e(e["event"])}  {_e(e["ref"])}  '
        f'from {_e(e["node_id"])}</li>'
        for e in events
    )


def render_page(state: dict[str, Any], nodes: Sequence[str]) -> str:
    """The whole page, with ``state`` (``NodeApp.state``) filled in."""
    user = state["user"]
    signed = (
        f"{_e(user['name'])} \u2014 expires in {max(0, round(user['until'] - state['now']))} s"
        if user else "not signed in"
    )  # fmt: skip
    cart = ", ".join(_e(item) for item in state["cart"]) or "empty"
    ref = state["session"] or "none yet"
    data = _e(orjson.dumps(state["data"], option=orjson.OPT_INDENT_2).decode())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>shoal demo</title><style>{STYLE}{DEVICES_STYLE}</style></head>
<body>
<header><h1>shoal demo: <span id="node" class="node-name">{_e(state['node'])}</span>
served this</h1>
<p>A round-robin front sends every request to the next node. No node keeps the session:
it lives in the shared store, with a sealed copy in your cookies.</p></header>
<main>
<section id="session-panel"><h2>Your session</h2>
<dl><dt>served by</dt><dd id="served-by">{_e(state['node'])} (pid {state['pid']})</dd>
<dt>session</dt><dd><code id="session-ref">{_e(ref)}</code> <br>(start of the id's SHA-256)</dd>
<dt>visits</dt><dd id="visits">{_e(state['visits'])}</dd>
<dt>signed in</dt><dd id="user">{signed}</dd>
<dt>cart</dt><dd id="cart">{cart}</dd></dl>
<form id="login-form" method="post" action="/login">
<input name="user" placeholder="your name" aria-label="name" required>
<button id="login">Sign in</button></form>
<form id="logout-form" method="post" action="/logout"><button id="logout" class="danger">
Sign out</button></form>
<form id="cart-form" method="post" action="/cart">
<input name="item" placeholder="an item" aria-label="item" required>
<button id="add">Add to cart</button></form>
<p class="note">Signing in gives the session a new id and keeps the sign-in for 20 s
(<code>session.set("user", ..., ttl=20)</code>); the cart stays.</p>
<pre id="data">{data}</pre></section>

<section id="nodes-panel"><h2>Nodes</h2>
<table><thead><tr><th>node</th><th>state</th><th>served</th><th></th></tr></thead>
<tbody>{_node_rows(nodes)}</tbody></table>
<p class="note">Kill a node: the front skips it, and the session carries on through
the others.</p></section>

<section id="store-panel"><h2>Store loss</h2>
<dl><dt>records in the store</dt><dd id="records">?</dd>
<dt>restored from replicas</dt><dd id="restored">{state['restored']} by {_e(state['node'])}
</dd></dl>
<form id="flush-form" method="post" action="/_demo/flush">
<button id="flush" class="danger">Flush the store</button></form>
<p class="note">Deletes every record of the demo. The next request brings the sealed
replica cookie, and the node writes the session back.</p></section>

<section id="race-panel"><h2>Concurrency</h2>
<form id="race-form" method="post" action="/_demo/race" data-timeout="120000">
<button id="race">Run 50 parallel requests per policy</button></form>
<table><thead><tr><th>policy</th><th>each request</th><th>kept</th><th></th></tr></thead>
<tbody id="race-results"></tbody></table>
<p class="note" id="race-note">50 requests at once through the front, on a fresh session
per policy.</p></section>

<section id="events-panel"><h2>Session events</h2>
<ol id="events">{_event_rows(state.get("events", []))}</ol>
<p class="note" id="events-note">Every node sends its session events (created, rotated,
invalidated, conflict...) through the store; each node hears every other node's.</p>
</section>
{render_devices(state)}</main>
<footer><p id="error"></p>
<noscript><p>Without JavaScript the node and race panels do not update; the forms
still work.</p></noscript>
shoal demo: a dev-only front, not a load balancer (see docs/deploy.md).</footer>
<script>{SCRIPT}{DEVICES_SCRIPT}</script>
</body></html>
"""
