"""Views written as Django's docs write session examples, for the adapter tests."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path


def count(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse(str(request.session["n"]))


def read(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session.get("n", 0)))


def login(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()
    request.session["user"] = "ada"
    return HttpResponse(request.session.session_key or "")


def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponse("bye")


def expire(request: HttpRequest) -> HttpResponse:
    request.session.set_expiry(int(request.GET.get("s", "0")))
    request.session["e"] = 1
    return HttpResponse("ok")


def fail(request: HttpRequest) -> HttpResponse:
    request.session["n"] = -1
    raise ValueError("the view failed")


urlpatterns = [
    path("count", count),
    path("read", read),
    path("login", login),
    path("logout", logout),
    path("expire", expire),
    path("fail", fail),
]


async def acount(request: HttpRequest) -> HttpResponse:
    """An async view using Django 5's async session methods."""
    n = await request.session.aget("n", 0) + 1
    await request.session.aset("n", n)
    return HttpResponse(str(n))


urlpatterns.append(path("acount", acount))


async def aread(request: HttpRequest) -> HttpResponse:
    """An async view that only reads: Django never calls save()."""
    return HttpResponse(str(await request.session.aget("n", 0)))


urlpatterns.append(path("aread", aread))
