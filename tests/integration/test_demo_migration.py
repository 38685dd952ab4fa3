"""The demo's Task moved out of the library (``hubs``) into the demo app without touching its
table: a database made before the move keeps its tasks, and its content type follows."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from conduit_rt.demo.models import Task

pytestmark = [pytest.mark.django_db(transaction=True)]


def migrate(target: list[tuple[str, str | None]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)


def test_a_database_from_before_the_move_keeps_its_tasks():
    migrate([("demo", None)])  # back to before the demo app: its migration drops the table
    assert "hubs_task" not in connection.introspection.table_names()

    # The database as it was: hubs' first migration had made hubs_task, with a task in it, and
    # the content type hubs.task.
    with connection.schema_editor() as editor:
        editor.create_model(Task)
    owner = get_user_model().objects.create(username="before-the-move")
    task_id = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO hubs_task (id, owner_id, task_type, status, progress, message, error, "
            "created_at, updated_at) VALUES (%s, %s, 'video-generation', 'completed', 100, 'Done', '', "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            [task_id.hex, owner.pk],
        )
    ContentType.objects.filter(app_label="demo", model="task").delete()
    old_type = ContentType.objects.create(app_label="hubs", model="task")

    migrate([("demo", "0001_initial")])

    task = Task.objects.get(pk=task_id)
    assert (task.owner, task.status, task.progress) == (owner, "completed", 100)
    moved = ContentType.objects.get(pk=old_type.pk)
    assert (moved.app_label, moved.model) == ("demo", "task")
    assert not ContentType.objects.filter(app_label="hubs", model="task").exists()


def test_a_new_database_gets_the_table_from_the_demo_and_none_from_the_library():
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(connection)
    hubs_models = {
        model
        for (app, _), migration in loader.disk_migrations.items()
        if app == "hubs"
        for operation in migration.operations
        if (model := getattr(operation, "name", None))
    }
    assert "Task" not in hubs_models
    assert "hubs_task" in connection.introspection.table_names()  # made by demo.0001
