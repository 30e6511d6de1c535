"""A Flask app whose ``flask.session`` is a shoal session on the embedded store.

Run it (from the repository root, with the virtualenv of the README):

    .venv/bin/flask --app examples/flask_app.py run

then open http://127.0.0.1:5000/. Sessions live in the embedded SQLite file
(``$SHOAL_STORE`` if set, else ``sessions.db`` in ``$SHOAL_DATA_DIR`` or
``~/.local/share/shoal``), so every process of the host shares them: serve
it with ``.venv/bin/gunicorn --workers 4 --chdir examples flask_app:app`` and
the cart follows the visitor from worker to worker.
"""

from __future__ import annotations

from flask import Flask, flash, get_flashed_messages, redirect, request, session, url_for
from markupsafe import escape

from shoal import SessionManager
from shoal.flask import current_session, init_app

app = Flask(__name__)
init_app(app, SessionManager(app_id="flask-example"))

PAGE = """<!doctype html>
<title>shoal + Flask</title>
<p>{flashes}</p>
<p>{who} &middot; visit {visits} &middot; cart: {cart}</p>
<form method="post" action="/cart"><input name="item"><button>add to cart</button></form>
<form method="post" action="/login"><input name="username"><button>log in</button></form>
<form method="post" action="/logout"><button>log out</button></form>
"""


@app.get("/")
def index() -> str:
    session["visits"] = session.get("visits", 0) + 1
    user = session.get("username")
    return PAGE.format(
        flashes=escape(" ".join(str(m) for m in get_flashed_messages())),
        who=f"logged in as {escape(user)}" if user else "not logged in",
        visits=session["visits"],
        cart=escape(", ".join(session.get("cart", [])) or "empty"),
    )


@app.post("/cart")
def add_to_cart() -> object:
    # An in-place edit is saved without `session.modified = True`; under the
    # default merge policy, two tabs adding at once to *different* keys both
    # keep their writes (see docs/concurrency.md for the same key).
    session.setdefault("cart", []).append(request.form.get("item", "?")[:40])
    return redirect(url_for("index"))


@app.post("/login")
def login() -> object:
    current_session().rotate(grace=0)  # a new id at login: a planted id is useless afterwards
    session["username"] = request.form.get("username", "")[:40] or "anonymous"
    session.permanent = True  # the cookie survives the browser closing
    return redirect(url_for("index"))


@app.post("/logout")
def logout() -> object:
    session.clear()  # ends the session; what follows goes to a fresh one
    flash("You have been logged out.")
    return redirect(url_for("index"))


if __name__ == "__main__":
    app.run(debug=True)
