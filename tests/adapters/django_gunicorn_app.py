"""A Django project in one module for the multi-process tests, served by gunicorn.

Django's own ``SessionMiddleware`` with ``SESSION_ENGINE = "shoal.django"``;
the store comes from ``$SHOAL_STORE`` and the policy from ``$SHOAL_POLICY``
(``serialized`` unless set). ``GET /`` counts in the key the
``X-Count-Key`` header names, ``n`` without one
(``tests.adapters._increments``). The module is its own ``ROOT_URLCONF``.
"""

from __future__ import annotations

import os

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path

settings.configure(
    SECRET_KEY="shoal-tests-not-secret",
    ALLOWED_HOSTS=["127.0.0.1"],
    INSTALLED_APPS=["django.contrib.sessions"],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "shoal.django.SessionErrorMiddleware",
    ],
    ROOT_URLCONF=__name__,
    DATABASES={},
    USE_TZ=True,
    SESSION_ENGINE="shoal.django",
    SHOAL_STORE=os.environ["SHOAL_STORE"],
    SHOAL_OPTIONS={"policy": os.environ.get("SHOAL_POLICY", "serialized"), "app_id": "django"},
)
django.setup()


def count(request: HttpRequest) -> JsonResponse:
    key = request.headers.get("X-Count-Key", "n")
    request.session[key] = request.session.get(key, 0) + 1
    return JsonResponse(
        {"n": request.session[key], "pid": os.getpid(), "session": dict(request.session.items())}
    )


urlpatterns = [path("", count)]
application = get_wsgi_application()
