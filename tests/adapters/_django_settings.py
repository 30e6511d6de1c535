"""Django configured once for the adapter tests: Django's own SessionMiddleware, shoal's engine."""

from __future__ import annotations

import django
from django.conf import settings


# What the request tests need, applied with override_settings: another test
# module of the same process (the docs' Django example) may have configured
# Django first, with fewer settings.
REQUEST_SETTINGS: dict[str, object] = {
    "MIDDLEWARE": [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "shoal.django.SessionErrorMiddleware",
    ],
    "ROOT_URLCONF": "tests.adapters._django_urls",
    "SESSION_ENGINE": "shoal.django",
    "ALLOWED_HOSTS": ["testserver", "127.0.0.1", "localhost"],
}


def configure() -> None:
    """Configure Django for these tests (idempotent); the store comes per test."""
    if settings.configured:
        return
    settings.configure(
        SECRET_KEY="shoal-tests-not-secret",
        INSTALLED_APPS=["django.contrib.sessions"],
        DATABASES={},
        SHOAL_STORE="memory://",
        USE_TZ=True,
        **REQUEST_SETTINGS,
    )
    django.setup()
