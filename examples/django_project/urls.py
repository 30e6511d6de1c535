"""The example's one view, written as Django's session docs write one."""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse
from django.urls import path


def count_visits(request: HttpRequest) -> JsonResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    pids = request.session.setdefault("pids", [])  # which workers served this visitor
    if os.getpid() not in pids:
        pids.append(os.getpid())
        request.session.modified = True  # Django saves in-place edits only when told
    return JsonResponse({"n": request.session["n"], "pid": os.getpid(), "pids": pids})


urlpatterns = [path("", count_visits)]
