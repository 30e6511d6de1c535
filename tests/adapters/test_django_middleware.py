"""Django's own ``SessionMiddleware`` over ``SESSION_ENGINE = "shoal.django"``, via Django's Client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adapters._django_settings import REQUEST_SETTINGS, configure

configure()

from django.test import Client, override_settings  # noqa: E402

from shoal.django import close_managers, get_manager  # noqa: E402


@pytest.fixture(autouse=True)
def request_settings() -> Iterator[None]:
    with override_settings(**REQUEST_SETTINGS):
        yield


@pytest.fixture
def client(local_store_url: str) -> Iterator[Client]:
    with override_settings(SHOAL_STORE=local_store_url):
        yield Client(raise_request_exception=False)
    close_managers()


def test_the_session_carries_and_the_cookie_follows_the_settings(client: Client) -> None:
    with override_settings(SESSION_COOKIE_NAME="sid", SESSION_COOKIE_SAMESITE="Strict"):
        assert client.get("/count").content == b"1"
        cookie = client.cookies["sid"]
        assert cookie["samesite"] == "Strict" and cookie["max-age"] == 1209600
        assert client.get("/count").content == b"2"
        assert client.get("/read").content == b"2"


def test_login_cycles_the_key_and_logout_ends_it(client: Client) -> None:
    client.get("/count")
    before = client.cookies["sessionid"].value
    after = client.get("/login").content.decode()
    assert after != before and client.cookies["sessionid"].value == after
    stale = Client()
    stale.cookies["sessionid"] = before
    assert stale.get("/read").content == b"0"  # the old key died at cycle_key()
    assert client.get("/count").content == b"2"  # the data moved to the new key
    assert client.get("/logout").content == b"bye"
    assert client.cookies["sessionid"].value == ""  # Django deleted the cookie
    stale.cookies["sessionid"] = after
    assert stale.get("/read").content == b"0"


def test_browser_close_and_custom_expiry(client: Client) -> None:
    client.get("/expire?s=0")
    assert client.cookies["sessionid"]["max-age"] == ""  # a browser-session cookie
    client.get("/expire?s=300")
    assert client.cookies["sessionid"]["max-age"] == 300
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
        other = Client()
        other.get("/count")
        assert other.cookies["sessionid"]["max-age"] == ""


def test_save_every_request_slides_an_unchanged_session(client: Client) -> None:
    client.get("/count")
    manager = get_manager()
    [first] = list(manager.store.records(manager.app_id))
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        assert client.get("/read").content == b"1"
        assert "sessionid" in client.cookies
    [again] = list(manager.store.records(manager.app_id))
    assert again.expires > first.expires and again.version == first.version + 1


def test_a_failed_view_saves_nothing(client: Client) -> None:
    client.get("/count")
    assert client.get("/fail").status_code == 500
    assert client.get("/read").content == b"1"


def test_a_read_only_view_leaves_no_lease_under_serialized(local_store_url: str) -> None:
    options = {"policy": "serialized", "lock_timeout": 0.2}
    with override_settings(SHOAL_STORE=local_store_url, SHOAL_OPTIONS=options):
        client = Client(raise_request_exception=False)
        client.get("/count")
        for _ in range(3):  # a leaked lease would make the next request wait, then 503
            assert client.get("/read").status_code == 200
        assert client.get("/fail").status_code == 500
        assert client.get("/count").content == b"2"
    close_managers()


def test_a_busy_session_answers_503_not_500(local_store_url: str) -> None:
    options = {"policy": "serialized", "lock_timeout": 0.05}
    with override_settings(SHOAL_STORE=local_store_url, SHOAL_OPTIONS=options):
        client = Client()
        client.get("/count")
        manager = get_manager()
        holder = manager.begin(client.cookies["sessionid"].value, lazy=False)  # holds the lease
        try:
            busy = client.get("/count")
        finally:
            manager.rollback(holder)
        assert busy.status_code == 503 and busy["Retry-After"] == "1"
        assert client.get("/count").content == b"2"
    close_managers()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cookie": {"name": "x"}}, "SESSION_COOKIE_"),
        ({"replica": True}, "replica"),
        ({"idle": 3}, "unknown option 'idle'; valid: app_id"),
        ({"idle_timeout": -1}, "idle_timeout"),
    ],
)
def test_bad_options_name_the_fix(options: dict[str, object], message: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(SHOAL_STORE="memory://", SHOAL_OPTIONS=options):
        with pytest.raises(ImproperlyConfigured, match=message):
            get_manager()


@pytest.mark.parametrize(
    ("cookie", "message"),
    [
        pytest.param({"SESSION_COOKIE_NAME": "__Host-sessionid"},
                     "SESSION_COOKIE_SECURE = True", id="host-not-secure"),
        pytest.param({"SESSION_COOKIE_NAME": "__secure-sessionid"},
                     "SESSION_COOKIE_SECURE = True", id="secure-not-secure-any-case"),
        pytest.param({"SESSION_COOKIE_NAME": "__Host-sessionid", "SESSION_COOKIE_SECURE": True,
                      "SESSION_COOKIE_DOMAIN": ".example.com"},
                     "SESSION_COOKIE_DOMAIN = None.*__Secure-", id="host-with-a-domain"),
        pytest.param({"SESSION_COOKIE_NAME": "__Host-sessionid", "SESSION_COOKIE_SECURE": True,
                      "SESSION_COOKIE_PATH": "/app"},
                     "SESSION_COOKIE_PATH = '/'", id="host-with-a-path"),
    ],
)
def test_a_prefixed_cookie_a_browser_would_drop_is_refused(
    cookie: dict[str, object], message: str
) -> None:
    """Django sets the cookie, so shoal checks the ``__Host-``/``__Secure-`` rules on its settings."""
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(SHOAL_STORE="memory://", **cookie):
        with pytest.raises(ImproperlyConfigured, match=message):
            get_manager()
    close_managers()


def test_a_valid_prefixed_cookie_is_accepted() -> None:
    with override_settings(SHOAL_STORE="memory://", SESSION_COOKIE_NAME="__Host-sessionid",
                           SESSION_COOKIE_SECURE=True):
        assert get_manager() is not None
    close_managers()


def test_an_async_view_with_the_async_methods(local_store_url: str) -> None:
    import asyncio

    from django.test import AsyncClient

    async def scenario() -> list[bytes]:
        client = AsyncClient()
        return [(await client.get("/acount")).content for _ in range(3)]

    with override_settings(SHOAL_STORE=local_store_url):
        assert asyncio.run(scenario()) == [b"1", b"2", b"3"]
    close_managers()


def test_an_async_read_only_view_leaves_no_lease_under_serialized(local_store_url: str) -> None:
    import asyncio

    from django.test import AsyncClient

    async def scenario() -> list[bytes]:
        client = AsyncClient()
        await client.get("/acount")
        # A leaked lease would make each next request wait, then answer 503.
        reads = [(await client.get("/aread")).content for _ in range(3)]
        return [*reads, (await client.get("/acount")).content]

    options = {"policy": "serialized", "lock_timeout": 0.2}
    with override_settings(SHOAL_STORE=local_store_url, SHOAL_OPTIONS=options):
        assert asyncio.run(scenario()) == [b"1", b"1", b"1", b"2"]
    close_managers()
