"""The "log out everywhere" panel of ``shoal demo``: sessions by user, on the page.

Signing in sets ``session.principal``, so the page can list every session of
that user (``manager.sessions_of``) and end them all at once
(``manager.invalidate_all``). *Sign in on a second device* posts the sign-in
with ``fetch(..., {credentials: "omit"})``: a request with no cookies, whose
Set-Cookie the browser drops, which is what another device's browser would
do; its session lives on in the store, as a phone's would. Kept apart from
``_demo_page`` so the page's other panels and this one change independently.
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["DEVICES_SCRIPT", "DEVICES_STYLE", "render_devices"]

DEVICES_STYLE = """
#devices-list li.this{font-weight:700}
"""

DEVICES_SCRIPT = """
let devicesUser = null;
function showDevices(s) {
  devicesUser = s.principal;
  text("devices-user", s.principal || "nobody (sign in first)");
  text("devices-count", s.devices.length);
  const list = $("devices-list");
  list.replaceChildren();
  for (const d of s.devices) {
    const item = document.createElement("li");
    item.className = d.this ? "this" : "";
    item.textContent = d.ref + " \\u2014 " + (d.this ? "this browser" : d.device);
    list.append(item);
  }
  $("second-device").disabled = !s.principal;
  $("logout-everywhere").disabled = !s.principal;
}
$("second-device").addEventListener("click", async () => {
  if (!devicesUser) return;
  try {
    // No cookies sent, none kept: a browser of its own, as a phone would be.
    const response = await fetch("/login", {method: "POST", credentials: "omit",
      headers: {Accept: "application/json"}, signal: AbortSignal.timeout(5000),
      body: new URLSearchParams({user: devicesUser, device: "second device"})});
    if (!response.ok) throw new Error("/login: " + response.status);
    text("error", "");
  } catch (error) {
    text("error", "failed: " + error.message);
  }
  await refresh();
});
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_devices(state: dict[str, Any]) -> str:
    """The panel, filled in from ``state`` (``principal``, ``devices``)."""
    items = "".join(
        f'<li class="{"this" if d["this"] else ""}">{_e(d["ref"])} \u2014 '
        f'{"this browser" if d["this"] else _e(d["device"])}</li>'
        for d in state["devices"]
    )
    user = _e(state["principal"]) if state["principal"] else "nobody (sign in first)"
    disabled = "" if state["principal"] else " disabled"
    return f"""<section id="devices-panel"><h2>Log out everywhere</h2>
<dl><dt>user</dt><dd id="devices-user">{user}</dd>
<dt>sessions</dt><dd id="devices-count">{len(state['devices'])}</dd></dl>
<ul id="devices-list">{items}</ul>
<button id="second-device" type="button"{disabled}>Sign in on a second device</button>
<form id="logout-everywhere-form" method="post" action="/logout-everywhere">
<button id="logout-everywhere" class="danger"{disabled}>Log out everywhere</button></form>
<p class="note">Signing in sets <code>session.principal</code>; every session of the
user is listed by <code>manager.sessions_of</code>, and
<code>manager.invalidate_all</code> ends them all, on every node at once.</p></section>
"""
