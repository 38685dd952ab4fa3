"""The demo: a page that starts a simulated task and shows its progress, and the task API."""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie
from django.views.decorators.http import require_POST

from hubs.auth.resolve import InvalidToken, token_from_request, user_from_token

from .conf import demo_setting
from .models import Task
from .tasks import astart_simulation

TASK_TYPES = {"video-generation"}


@login_required
@ensure_csrf_cookie
def demo(request: HttpRequest) -> HttpResponse:
    """The demo page: start a task, watch its progress over the task hub."""
    return render(
        request,
        "demo.html",
        {
            "tasks": Task.objects.filter(owner=request.user)[:10],
            "ping_interval_ms": int(demo_setting("PING_INTERVAL_MS")),
        },
    )


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    """Django's CSRF check, for the session-authenticated path of a csrf-exempt view."""
    check = CsrfViewMiddleware(lambda r: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda r: HttpResponse(), (), {})


@csrf_exempt
@require_POST
async def create_task(request: HttpRequest) -> HttpResponse:
    """``POST /api/tasks/`` → ``201 {"taskId": ...}`` and the simulation starts shortly after.

    Authenticated by a bearer/``access_token`` token (no CSRF token needed) or by the session
    (CSRF token required). The body is optional; when sent as ``application/json`` it is read as
    ``{"taskType": "video-generation"}``.
    """
    token = token_from_request(request)
    if token is not None:
        try:
            user: Any = await database_sync_to_async(user_from_token)(token)
        except InvalidToken:
            return JsonResponse({"error": "Invalid or expired access token."}, status=401)
    else:
        user = await request.auser()
        if not user.is_authenticated:
            return JsonResponse({"error": "Authentication required."}, status=401)
        failure = await database_sync_to_async(_csrf_failure)(request)
        if failure is not None:
            return failure

    task_type = "video-generation"
    if request.content_type == "application/json" and request.body.strip():
        max_body = 16 * 1024  # {"taskType": ...} needs a few dozen bytes
        if len(request.body) > max_body:
            return JsonResponse({"error": f"The body is limited to {max_body} bytes."}, status=413)
        try:
            body = json.loads(request.body)
        except RecursionError:  # e.g. thousands of "[": json.loads recurses per level
            return JsonResponse({"error": "The body is nested too deeply."}, status=400)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError included
            return JsonResponse({"error": "The body must be a JSON object."}, status=400)
        if not isinstance(body, dict):
            return JsonResponse({"error": "The body must be a JSON object."}, status=400)
        task_type = body.get("taskType", task_type)
        if task_type not in TASK_TYPES:
            return JsonResponse({"error": f"Unknown taskType; known: {sorted(TASK_TYPES)}."}, status=400)

    task = await Task.objects.acreate(owner=user, task_type=task_type)
    await astart_simulation(str(task.pk))
    return JsonResponse(
        {"taskId": str(task.pk), "taskType": task.task_type, "status": task.status}, status=201
    )
