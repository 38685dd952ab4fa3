"""The demo's Task, in the table it had as ``hubs.Task`` (``hubs_task``).

A database made before the model moved here already has that table and its rows (the hubs app's
first migration created it then): the model is adopted as it stands, and its content type (so
its admin permissions and history) moves from ``hubs.task`` to ``demo.task``. A new database
gets the table created here.
"""

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class CreateModelUnlessItsTableExists(migrations.CreateModel):
    """``CreateModel``, whose table is created only where it does not exist yet."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:  # noqa: ANN001
        model = to_state.apps.get_model(app_label, self.name)
        if model._meta.db_table in schema_editor.connection.introspection.table_names():
            return
        super().database_forwards(app_label, schema_editor, from_state, to_state)


def move_content_type(apps, schema_editor) -> None:  # noqa: ANN001
    content_type = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not content_type.objects.using(db).filter(app_label="demo", model="task").exists():
        content_type.objects.using(db).filter(app_label="hubs", model="task").update(app_label="demo")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("hubs", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        CreateModelUnlessItsTableExists(
            name="Task",
            fields=[
                (
                    "id",
                    models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False),
                ),
                ("task_type", models.CharField(default="video-generation", max_length=64)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("running", "Running"),
                            ("completed", "Completed"),
                            ("failed", "Failed"),
                            ("cancelled", "Cancelled"),
                        ],
                        default="pending",
                        max_length=16,
                    ),
                ),
                ("progress", models.PositiveSmallIntegerField(default=0)),
                ("message", models.CharField(blank=True, default="", max_length=500)),
                ("result", models.JSONField(blank=True, null=True)),
                ("error", models.TextField(blank=True, default="")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="conduit_tasks",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "db_table": "hubs_task",
                "ordering": ["-created_at"],
                "indexes": [
                    models.Index(fields=["owner", "-created_at"], name="hubs_task_owner_i_4b788c_idx")
                ],
            },
        ),
        migrations.RunPython(move_content_type, migrations.RunPython.noop),
    ]
