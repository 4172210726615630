"""The runs' status indexes are partial (pipeline/_status_index.py): runs under way in one, runs
that ended unsuccessfully in three, succeeded runs in none, so that a run's steps do not rewrite
status-ordered index pages. These say that every status belongs to exactly one such group, that
filtering by status still returns exactly the runs in that status (in a subquery too), and that
each query of runs by status the dashboard, the API, the metrics and flow control make reads one
of those indexes rather than the whole table."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from pipeline import RunStatus
from pipeline._status_index import UNSUCCESSFUL_RUN_STATUSES, status_in, status_is
from pipeline._statuses import ACTIVE_RUN_STATUSES
from pipeline.models import Event, Run
from web.run_queries import RunFilters, runs_queryset

pytestmark = pytest.mark.django_db


def make_runs() -> dict[str, Run]:
    """One run in each status, for two pipelines and two event types."""
    now = timezone.now()
    runs = {}
    for i, status in enumerate(RunStatus.values):
        event = Event.objects.create(type="a.happened" if i % 2 else "b.happened", payload={}, occurred_at=now,
                                     trace_id=f"{i:032x}")
        runs[status] = Run.objects.create(event=event, pipeline="left" if i % 2 else "right", status=status,
                                          created_at=now - timedelta(seconds=i))
    return runs


def test_every_run_status_is_succeeded_or_in_exactly_one_status_index_group():
    active, unsuccessful = {str(s) for s in ACTIVE_RUN_STATUSES}, {str(s) for s in UNSUCCESSFUL_RUN_STATUSES}
    assert not active & unsuccessful
    assert active | unsuccessful | {"succeeded"} == set(RunStatus.values)


def test_filtering_by_status_returns_exactly_the_runs_in_that_status():
    runs = make_runs()
    for status in RunStatus.values:
        assert list(Run.objects.filter(status_is(status))) == [runs[status]], status
    for group in (ACTIVE_RUN_STATUSES, UNSUCCESSFUL_RUN_STATUSES, ("succeeded", "failed"), ("pending", "succeeded")):
        wanted = {runs[s].id for s in group}
        assert set(Run.objects.filter(status_in(group)).values_list("id", flat=True)) == wanted, group
        # As a subquery (its table gets another alias there), as flow control's repair uses it.
        others = Run.objects.exclude(id__in=Run.objects.filter(status_in(group)).values("id"))
        assert set(others.values_list("id", flat=True)) == {r.id for r in runs.values()} - wanted, group


def test_the_runs_list_filters_by_status_with_and_without_the_other_filters():
    runs = make_runs()
    for status, run in runs.items():
        assert list(runs_queryset(RunFilters(status=status))) == [run]
        assert list(runs_queryset(RunFilters(status=status, pipeline=run.pipeline))) == [run]
        assert list(runs_queryset(RunFilters(status=status, event_type=run.event_type))) == [run]
        assert not runs_queryset(RunFilters(status=status, pipeline="elsewhere")).exists()


def plan(queryset) -> str:
    """The backend's plan for the query: which index it reads. (PostgreSQL, on a near-empty test
    table, would rather read the table itself: sequential scans are turned off for the question.)"""
    sql, params = queryset.query.sql_with_params()
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(str(row[-1] if connection.vendor == "sqlite" else row[0]) for row in cursor.fetchall())


PAGE = ("-created_at", "-id")


@pytest.mark.parametrize("filters, index", [
    ({"status": "failed"}, "run_unsuccessful_idx"),
    ({"status": "cancelled", "pipeline": "left"}, "run_pipeline_unsuccessful_idx"),
    ({"status": "failed", "event_type": "a.happened"}, "run_type_unsuccessful_idx"),
    ({"status": "running"}, "run_active_idx"),
    ({"status": "pending", "pipeline": "left"}, "run_active_idx"),
    ({"status": "waiting", "pipeline": "right"}, "run_active_idx"),
])
def test_each_runs_list_filter_by_status_reads_a_status_index(filters, index):
    make_runs()
    assert index in plan(runs_queryset(RunFilters(**filters)).order_by(*PAGE)[:50])


def test_the_engine_s_own_queries_by_status_read_a_status_index():
    make_runs()
    # The metrics' runs-in-progress gauge, failed-run replay, and the flow-control window's pending runs.
    assert "run_active_idx" in plan(Run.objects.filter(status_in(ACTIVE_RUN_STATUSES)).values("pipeline", "status"))
    assert "run_pipeline_unsuccessful_idx" in plan(Run.objects.filter(status_is("failed"), pipeline="left"))
    assert "run_active_idx" in plan(Run.objects.filter(status_is("pending"), pipeline="left"))
