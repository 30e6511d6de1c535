"""The counting test apps under their real multi-worker servers, for the process tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from ..processes._servers import running_gunicorn, running_uvicorn

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2

Server = Callable[[dict[str, str]], AbstractContextManager[int]]

# framework -> starts its counting app (tests/adapters/*_app.py) with 2 workers.
SERVERS: dict[str, Server] = {
    "flask": lambda env: running_gunicorn(
        "tests.adapters.flask_gunicorn_app:app", cwd=ROOT, env=env, workers=WORKERS
    ),
    "django": lambda env: running_gunicorn(
        "tests.adapters.django_gunicorn_app:application", cwd=ROOT, env=env, workers=WORKERS
    ),
    "starlette": lambda env: running_uvicorn(
        "tests.adapters.uvicorn_app:app", cwd=ROOT, env=env, workers=WORKERS
    ),
    "fastapi": lambda env: running_uvicorn(
        "tests.adapters.fastapi_uvicorn_app:app", cwd=ROOT, env=env, workers=WORKERS
    ),
}


def server_env(store_url: str, **extra: str) -> dict[str, str]:
    """The apps' environment: ``$SHOAL_STORE``, this checkout's shoal and tests first."""
    path = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    return {**os.environ, "SHOAL_STORE": store_url, "PYTHONPATH": path, **extra}
