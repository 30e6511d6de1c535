"""``shoal.django.SessionStore`` against the behaviours of Django's ``SessionTestsMixin``.

Django runs one mixin (tests/sessions_tests/tests.py in Django's repository)
against every session backend; each test below checks the behaviour of the
upstream test of the same name (``test_`` + name), written anew for pytest,
over memory, SQLite, Redis and PostgreSQL. Where shoal deliberately differs,
the test says so and docs/frameworks.md lists it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.adapters._django_settings import configure

configure()

from django.conf import settings  # noqa: E402 - after configure()
from django.contrib.sessions.backends.base import CreateError, UpdateError  # noqa: E402
from django.core import management  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from shoal.django import SessionStore, close_managers  # noqa: E402
from shoal.ids import is_well_formed  # noqa: E402
from tests.conftest import STORE_KINDS  # noqa: E402

Backend = Callable[..., SessionStore]
DJANGO_STORES = ("memory", "sqlite", "redis", "postgresql")


@pytest.fixture(params=DJANGO_STORES)
def django_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``SHOAL_STORE`` set to an empty store of each kind for the test."""
    url = STORE_KINDS[request.param](request, tmp_path)
    with override_settings(SHOAL_STORE=url):
        yield url
    close_managers()


@pytest.fixture
def backend(django_store: str) -> Backend:
    return SessionStore


@pytest.fixture
def session(backend: Backend) -> Iterator[SessionStore]:
    made = backend()
    yield made
    made.delete()


def test_new_session(session: SessionStore) -> None:
    assert session.modified is False and session.accessed is False


def test_get_empty(session: SessionStore) -> None:
    assert session.get("cat") is None


def test_store(session: SessionStore) -> None:
    session["cat"] = "dog"
    assert session.modified is True
    assert session.pop("cat") == "dog"


def test_pop(session: SessionStore) -> None:
    session["some key"] = "exists"
    session.accessed = session.modified = False
    assert session.pop("some key") == "exists"
    assert session.accessed is True and session.modified is True
    assert session.get("some key") is None


def test_pop_default(session: SessionStore) -> None:
    assert session.pop("some key", "does not exist") == "does not exist"
    assert session.accessed is True and session.modified is False


def test_pop_no_default_keyerror_raised(session: SessionStore) -> None:
    with pytest.raises(KeyError):
        session.pop("some key")


def test_setdefault(session: SessionStore) -> None:
    assert session.setdefault("foo", "bar") == "bar"
    assert session.setdefault("foo", "baz") == "bar"
    assert session.accessed is True and session.modified is True


def test_update(session: SessionStore) -> None:
    session.update({"update key": 1})
    assert session.accessed is True and session.modified is True
    assert session.get("update key") == 1


def test_has_key(session: SessionStore) -> None:
    session["some key"] = 1
    session.modified = session.accessed = False
    assert "some key" in session
    assert session.accessed is True and session.modified is False


def test_keys_values_items(session: SessionStore) -> None:
    assert list(session.values()) == []
    session["x"] = 1
    session.modified = session.accessed = False
    assert list(session.keys()) == ["x"] and list(session.values()) == [1]
    assert list(session.items()) == [("x", 1)]
    assert session.accessed is True and session.modified is False


def test_clear(session: SessionStore) -> None:
    session["x"] = 1
    session.modified = session.accessed = False
    session.clear()
    assert list(session.items()) == []
    assert session.accessed is True and session.modified is True


def test_save(session: SessionStore) -> None:
    session.save()
    assert session.exists(session.session_key) is True


def test_delete(session: SessionStore) -> None:
    session.save()
    session.delete(session.session_key)
    assert session.exists(session.session_key) is False


def test_flush(session: SessionStore) -> None:
    session["foo"] = "bar"
    session.save()
    prev_key = session.session_key
    session.flush()
    assert session.exists(prev_key) is False
    assert session.session_key is None
    assert session.modified is True and session.accessed is True


def test_cycle(session: SessionStore) -> None:
    session["a"], session["b"] = "c", "d"
    session.save()
    prev_key, prev_data = session.session_key, list(session.items())
    session.cycle_key()
    assert session.exists(prev_key) is False
    assert session.session_key != prev_key
    assert list(session.items()) == prev_data


def test_cycle_with_no_session_cache(backend: Backend, session: SessionStore) -> None:
    session["a"], session["b"] = "c", "d"
    session.save()
    prev_data = sorted(session.items())
    fresh = backend(session.session_key)
    assert hasattr(fresh, "_session_cache") is False
    fresh.cycle_key()
    assert sorted(fresh.items()) == prev_data
    fresh.delete()


def test_save_doesnt_clear_data(session: SessionStore) -> None:
    session["a"] = "b"
    session.save()
    assert session["a"] == "b"


def test_invalid_key(backend: Backend) -> None:
    made = backend("1")
    made.save()
    assert made.session_key != "1" and made.get("cat") is None
    made.delete()


@pytest.mark.parametrize("key", ["", "1234567"])
def test_session_key_too_short_or_empty_invalid(session: SessionStore, key: str) -> None:
    session._session_key = key
    assert session.session_key is None


def test_session_key_valid_string_saved(session: SessionStore) -> None:
    session._session_key = "12345678"
    assert session.session_key == "12345678"


def test_session_key_is_read_only(session: SessionStore) -> None:
    with pytest.raises(AttributeError):
        session.session_key = session._get_new_session_key()


def test_default_expiry(session: SessionStore) -> None:
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE
    session.set_expiry(0)
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


def test_custom_expiry_seconds(session: SessionStore) -> None:
    modification = timezone.now()
    session.set_expiry(10)
    assert session.get_expiry_date(modification=modification) == modification + timedelta(
        seconds=10
    )
    assert session.get_expiry_age(modification=modification) == 10
    assert session.shoal.lifetime == 10  # the core lifetime follows


def test_custom_expiry_datetime(session: SessionStore) -> None:
    modification = timezone.now()
    session.set_expiry(modification + timedelta(seconds=10))
    assert session.get_expiry_date(modification=modification) == modification + timedelta(
        seconds=10
    )
    assert session.get_expiry_age(modification=modification) == 10
    assert session.shoal.lifetime_until == (modification + timedelta(seconds=10)).timestamp()


def test_custom_expiry_timedelta(session: SessionStore) -> None:
    before = timezone.now()
    session.set_expiry(timedelta(seconds=10))
    until = session.shoal.lifetime_until
    assert until is not None and before.timestamp() + 10 <= until <= timezone.now().timestamp() + 10


def test_custom_expiry_reset(session: SessionStore) -> None:
    session.set_expiry(None)
    session.set_expiry(10)
    session.set_expiry(None)
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE
    assert session.shoal.lifetime is None


def test_get_expire_at_browser_close(session: SessionStore) -> None:
    for at_close in (False, True):
        with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=at_close):
            session.set_expiry(10)
            assert session.get_expire_at_browser_close() is False
            session.set_expiry(0)
            assert session.get_expire_at_browser_close() is True
            session.set_expiry(None)
            assert session.get_expire_at_browser_close() is at_close


def test_decode(session: SessionStore) -> None:
    data = {"a test key": "a test value"}
    assert session.decode(session.encode(data)) == data


def test_decode_failure_logged_to_security(
    session: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    bad = base64.b64encode(b"flaskdj:alkdjf").decode("ascii")
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        assert session.decode(bad) == {}
    assert "corrupted" in caplog.text


def test_actual_expiry(backend: Backend, session: SessionStore) -> None:
    # Upstream needs the pickle serializer for the timedelta; shoal's codec needs none.
    session["foo"] = "bar"
    session.set_expiry(-timedelta(seconds=10))
    session.save()
    later = backend(session.session_key)
    assert "foo" not in later and later.session_key is None


def test_session_load_does_not_create_record(backend: Backend) -> None:
    made = backend("someunknownkey")
    made.load()
    assert made.session_key is None
    assert made.exists(made.session_key) is False


def test_an_unknown_well_formed_key_is_not_adopted(backend: Backend) -> None:
    # Django's db backend would store a client-chosen key it does not know at
    # save (it only refuses it at load); shoal never adopts one.
    unknown = backend("A" * 43)
    unknown["x"] = 1
    unknown.save()
    assert unknown.session_key != "A" * 43 and is_well_formed(unknown.session_key)
    unknown.delete()


def test_session_save_does_not_resurrect_session_logged_out_in_other_context(
    backend: Backend,
) -> None:
    s1 = backend()
    s1["test_data"] = "value1"
    s1.save(must_create=True)
    s2 = backend(s1.session_key)
    s2.delete()
    s1["test_data"] = "value2"
    with pytest.raises(UpdateError):
        s1.save()
    assert s1.load() == {}


def test_a_save_after_another_request_deleted_the_loaded_session(backend: Backend) -> None:
    first = backend()
    first["n"] = 1
    first.save()
    loaded = backend(first.session_key)
    assert loaded["n"] == 1
    backend(first.session_key).delete()
    loaded["n"] = 2
    with pytest.raises(UpdateError):
        loaded.save()
    assert backend(first.session_key).load() == {}


def test_must_create_refuses_a_stored_session(backend: Backend, session: SessionStore) -> None:
    session["x"] = 1
    session.save()
    again = backend(session.session_key)
    again["x"] = 2
    with pytest.raises(CreateError):
        again.save(must_create=True)


def test_create_stores_an_empty_session_now(session: SessionStore) -> None:
    session.create()
    assert session.exists(session.session_key) and session.modified is True


def test_clearsessions_command(backend: Backend) -> None:
    live = backend()
    live["foo"] = "bar"
    live.set_expiry(3600)
    live.save()
    ended = backend()
    ended["foo"] = "bar"
    ended.set_expiry(-3600)  # expired longer ago than the grace period
    ended.save()
    manager = live._manager
    # Redis may drop the ended record by its native TTL already; elsewhere
    # it stays until purged.
    assert 1 <= len(list(manager.store.records(manager.app_id))) <= 2
    management.call_command("clearsessions")
    assert [r.expires for r in manager.store.records(manager.app_id)] == [
        pytest.approx(timezone.now().timestamp() + 3600, abs=60)
    ]


# -- Django 5's async methods ------------------------------------------------


def test_async_methods(backend: Backend) -> None:
    async def scenario() -> str | None:
        made = backend()
        assert await made.aget("cat") is None
        await made.aset("cat", "dog")
        assert await made.asetdefault("n", 1) == 1
        await made.aupdate({"m": 2})
        assert await made.ahas_key("m") and sorted(await made.akeys()) == ["cat", "m", "n"]
        assert await made.apop("m") == 2
        await made.aset_expiry(300)
        assert await made.aget_expiry_age() == 300 and made.shoal.lifetime == 300
        await made.asave()
        key = made.session_key
        assert key is not None and await made.aexists(key)
        loaded = backend(key)
        assert await loaded.aget("cat") == "dog"
        await loaded.acycle_key()
        assert loaded.session_key != key and not await loaded.aexists(key)
        assert await loaded.aget("n") == 1
        moved = loaded.session_key
        await loaded.aflush()
        assert loaded.session_key is None
        return moved

    moved = asyncio.run(scenario())
    assert moved is not None and not SessionStore().exists(moved)
