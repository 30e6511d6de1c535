"""Every code example in README.md and docs/*.md runs, as a reader would run it.

Python blocks of a file run in order in one namespace (in a temporary
working directory, with the data directory and secret keys of the test);
a block followed by a ``wsgi`` marker is served through a WSGI client that
carries cookies, and its answers are checked. Shell blocks run in bash with
this virtualenv's ``shoal`` on PATH. See ``_markdown`` for the markers.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shoal import SessionManager
from shoal.wsgi import SessionMiddleware

from ._markdown import Example, MarkerError, parse_examples

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_TIMEOUT = 120.0


def _documents_with_examples() -> list[Path]:
    return [path for path in DOCUMENTS if parse_examples(path)]


@pytest.fixture
def reader_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What a reader's shell would have: a fresh data directory, secret keys, no store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SHOAL_STORE", raising=False)
    monkeypatch.setenv("SHOAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SHOAL_SECRET_KEYS", secrets.token_urlsafe(32))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    bindir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return dict(os.environ)


def run_examples(examples: list[Example], env: dict[str, str]) -> int:
    """Run ``examples`` in order; the number run. Fails naming the broken one."""
    namespace: dict[str, Any] = {"__name__": "__example__"}
    ran = 0
    try:
        for example in examples:
            if example.skip is not None:
                continue
            if example.language == "python":
                _run_python(example, namespace)
            else:
                _run_shell(example, env)
            ran += 1
    finally:
        _close_managers(namespace)
    return ran


def _run_python(example: Example, namespace: dict[str, Any]) -> None:
    try:
        exec(compile(example.code, example.where, "exec"), namespace)  # noqa: S102
    except Exception as exc:
        raise AssertionError(f"example {example.where} raised {exc!r}") from exc
    if example.wsgi is not None:
        _serve(example, namespace)


def _serve(example: Example, namespace: dict[str, Any]) -> None:
    from werkzeug.test import Client

    assert example.wsgi is not None
    app = namespace.get("app")
    assert callable(app), f"example {example.where} defines no WSGI app named 'app'"
    client = Client(app)
    for number, expected in enumerate(example.wsgi.expected, 1):
        response = client.get(example.wsgi.path)
        body = response.get_data(as_text=True)
        assert response.status_code == 200, (
            f"example {example.where}, request {number}: {response.status}\n{body}"
        )
        assert expected in body, (
            f"example {example.where}, request {number}: {expected!r} not in {body!r}"
        )


def _run_shell(example: Example, env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", example.code],
        env=env, capture_output=True, text=True, timeout=SHELL_TIMEOUT, check=False,
    )
    assert result.returncode == 0, (
        f"example {example.where} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def _close_managers(namespace: dict[str, Any]) -> None:
    for value in namespace.values():
        if isinstance(value, SessionMiddleware):
            value = value.manager
        if isinstance(value, SessionManager):
            value.close()


@pytest.mark.parametrize(
    "document", _documents_with_examples(), ids=lambda path: path.relative_to(ROOT).as_posix()
)
def test_every_example_of_the_document_runs(document: Path, reader_env: dict[str, str]) -> None:
    examples = parse_examples(document)
    ran = run_examples(examples, reader_env)
    assert ran or all(example.skip for example in examples)


def test_the_readme_quickstart_is_served_and_checked() -> None:
    checked = [example for example in parse_examples(ROOT / "README.md") if example.wsgi]
    assert checked, "the README's WSGI quickstart lost its wsgi marker"
    assert all(example.skip is None for example in checked)


# -- the runner itself: it must be able to fail ---------------------------------


def _doc(tmp_path: Path, text: str) -> list[Example]:
    path = tmp_path / "doc.md"
    path.write_text(text, encoding="utf-8")
    return parse_examples(path)


GOOD_APP = '''\
```python
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
```
'''


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("```python\n1 / 0\n```\n", "doc.md:1 raised", id="python-raises"),
        pytest.param("```sh\nfalse\n```\n", "doc.md:1 exited 1", id="shell-fails"),
        pytest.param(
            GOOD_APP + "<!-- example: wsgi GET / => goodbye -->\n",
            "'goodbye' not in 'hello'", id="wsgi-wrong-output",
        ),
        pytest.param(
            "```python\napp = None\n```\n<!-- example: wsgi GET / => x -->\n",
            "no WSGI app", id="wsgi-no-app",
        ),
    ],
)
def test_a_broken_example_fails(
    tmp_path: Path, reader_env: dict[str, str], text: str, message: str
) -> None:
    with pytest.raises(AssertionError, match=message):
        run_examples(_doc(tmp_path, text), reader_env)


def test_blocks_of_one_document_share_a_namespace(
    tmp_path: Path, reader_env: dict[str, str]
) -> None:
    text = "```python\nx = 41\n```\n\ntext\n\n```python\nassert x == 41\n```\n"
    assert run_examples(_doc(tmp_path, text), reader_env) == 2


def test_a_served_example_carries_cookies(tmp_path: Path, reader_env: dict[str, str]) -> None:
    text = '''\
```python
from shoal import SessionManager
from shoal.wsgi import SessionMiddleware

def count(environ, start_response):
    session = environ["shoal.session"]
    session["n"] = body = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(body).encode()]

app = SessionMiddleware(count, SessionManager("memory://"))
```
<!-- example: wsgi GET / => 1 | 2 | 3 -->
'''
    assert run_examples(_doc(tmp_path, text), reader_env) == 1


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("<!-- example: skip -->\n```python\n1\n```\n", id="skip-without-reason"),
        pytest.param("<!-- example: skp typo -->\n```python\n1\n```\n", id="unknown-before"),
        pytest.param("```python\n1\n```\n<!-- example: wsgi / x -->\n", id="bad-wsgi"),
        pytest.param("```\nplain\n```\n<!-- example: wsgi GET / => x -->\n", id="on-prose"),
        pytest.param("```python\n1\n", id="unclosed"),
    ],
)
def test_a_marker_that_cannot_be_understood_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(MarkerError):
        _doc(tmp_path, text)


def test_a_skipped_example_is_not_run(tmp_path: Path, reader_env: dict[str, str]) -> None:
    text = "<!-- example: skip needs a Redis server -->\n```python\n1 / 0\n```\n"
    examples = _doc(tmp_path, text)
    assert examples[0].skip == "needs a Redis server"
    assert run_examples(examples, reader_env) == 0
