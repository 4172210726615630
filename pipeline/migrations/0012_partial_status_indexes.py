# The runs' status indexes become partial (pipeline/_status_index.py): runs under way in one index
# (status, newest first, pipeline), runs that ended unsuccessfully in three; succeeded runs in none.
# Each step of a run rewrote its entry in three status-ordered indexes, on a different page each
# time (issue 19, SQLite, hot-path tool at 8 threads: 29.5 WAL pages per run before, 25.7 after).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('pipeline', '0011_uuid7_ids'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='run',
            name='run_status_recent_idx',
        ),
        migrations.RemoveIndex(
            model_name='run',
            name='run_pipeline_status_idx',
        ),
        migrations.RemoveIndex(
            model_name='run',
            name='run_type_status_idx',
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('status__in', ['pending', 'running', 'waiting'])), fields=['status', '-created_at', 'pipeline'], name='run_active_idx'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('status__in', ['failed', 'cancelled', 'skipped', 'debounced', 'batched'])), fields=['status', '-created_at'], name='run_unsuccessful_idx'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('status__in', ['failed', 'cancelled', 'skipped', 'debounced', 'batched'])), fields=['pipeline', 'status', '-created_at'], name='run_pipeline_unsuccessful_idx'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('status__in', ['failed', 'cancelled', 'skipped', 'debounced', 'batched'])), fields=['event_type', 'status', '-created_at'], name='run_type_unsuccessful_idx'),
        ),
    ]
