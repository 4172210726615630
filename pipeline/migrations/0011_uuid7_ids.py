# The ids of new events, runs and worker heartbeats are UUID version 7 (pipeline/_ids.py). A Python
# default only: nothing changes in the database, so the state alone moves (on SQLite an AlterField
# would rebuild the tables, a long lock on a large store, for nothing).

import pipeline._ids
from django.db import migrations, models


def _id_field() -> models.UUIDField:
    return models.UUIDField(default=pipeline._ids.new_id, editable=False, primary_key=True, serialize=False)


class Migration(migrations.Migration):

    dependencies = [
        ('pipeline', '0010_event_priority'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(model_name=model, name='id', field=_id_field())
                for model in ('event', 'run', 'workerheartbeat')
            ],
            database_operations=[],
        ),
    ]
