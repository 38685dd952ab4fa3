# The first migration of the hubs app. It once created the demo's Task model, which now lives in
# the project's demo app (conduit_rt/demo): a database made back then keeps its hubs_task table,
# which the demo's own first migration adopts; a new database never gets one from the library.

from django.db import migrations


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations: list[migrations.operations.base.Operation] = []
