"""A Django project whose ``request.session`` is a shoal session, on the embedded store.

Run it (from the repository root, with the virtualenv of the README):

    .venv/bin/gunicorn --workers 2 --chdir examples/django_project wsgi:application

then open http://127.0.0.1:8000/ and reload: the visit count goes up
whichever worker answers. Everything is Django's usual session setup (its
own SessionMiddleware, ``request.session`` in the views); the two shoal
lines are SESSION_ENGINE and SHOAL_OPTIONS below (SHOAL_STORE is optional:
without it, ``$SHOAL_STORE`` or the embedded SQLite file). ``python
manage.py clearsessions`` purges expired sessions.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.sessions"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "shoal.django.SessionErrorMiddleware",  # a busy session answers 503, not 500
]
ROOT_URLCONF = "urls"
DATABASES: dict[str, object] = {}  # sessions need no database with shoal
USE_TZ = True

SESSION_ENGINE = "shoal.django"
SHOAL_OPTIONS = {"policy": "serialized", "app_id": "django-example"}
