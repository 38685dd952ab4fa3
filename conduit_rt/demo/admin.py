"""Admin of the demo: its tasks."""

from __future__ import annotations

from django.contrib import admin

from .models import Task


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "task_type", "owner", "status", "progress", "updated_at")
    list_filter = ("status", "task_type")
    search_fields = ("id", "owner__username", "message")
    readonly_fields = ("id", "created_at", "updated_at")
