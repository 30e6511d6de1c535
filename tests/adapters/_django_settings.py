"""Django configured once for the adapter tests: Django's own SessionMiddleware, shoal's engine."""

from __future__ import annotations

import django
from django.conf import settings


def configure() -> None:
    """Configure Django for these tests (idempotent); the store comes per test."""
    if settings.configured:
        return
    settings.configure(
        SECRET_KEY="shoal-tests-not-secret",
        INSTALLED_APPS=["django.contrib.sessions"],
        DATABASES={},
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "shoal.django.SessionErrorMiddleware",
        ],
        ROOT_URLCONF="tests.adapters._django_urls",
        SESSION_ENGINE="shoal.django",
        SHOAL_STORE="memory://",
        ALLOWED_HOSTS=["testserver", "127.0.0.1", "localhost"],
        USE_TZ=True,
    )
    django.setup()
