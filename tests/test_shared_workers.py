"""The session's shared worker and each test's data (tests/conftest.py): a test may end while work it
committed is still queued for the shared worker (a backfill, an emit); that work is done before the
test's data is flushed, not during the flush (a deadlock with PostgreSQL's TRUNCATE) nor after it
(rows in the next test's data). Real broker, the session's worker. In this order, as a pair."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipeline.models import Run
from schedules import operations
from tests.testapp.models import SideEffect

pytestmark = pytest.mark.broker


def test_a_test_may_end_while_the_shared_worker_still_runs_what_it_started(live_worker):
    operations.create({"name": "slow_backfilled", "pipeline": "slow_ticks", "interval_seconds": 1})
    result = operations.backfill("slow_backfilled", datetime(2026, 1, 1, tzinfo=timezone.utc),
                                 datetime(2026, 1, 1, 0, 0, 5, tzinfo=timezone.utc))
    assert result["runs_started"] == 6  # each 2.5 s long: still running when this test returns


def test_the_next_test_finds_the_shared_worker_idle_and_nothing_of_that_work(live_worker):
    assert live_worker.holds() == 0
    assert not Run.objects.exists() and not SideEffect.objects.exists()
