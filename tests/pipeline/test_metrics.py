"""Prometheus metrics: counted from the transition log lines, summed over a worker's processes,
served by each process kind (web `/metrics`, a worker port, a scheduler port), with the outbox,
runs in progress and queue depth read when scraped."""
import re
import socket
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from pipeline import emit
from pipeline.metrics import metrics_base_dir
from pipeline.models import Event, Run
from tests.conftest import ManagedProcess, child_env, purge_queues, start_worker, wait_for

NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        # The same exposition format (and version) as the web's /metrics, whatever the process.
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        return response.read().decode()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(text: str, sample: str, **labels: str) -> float:
    """The value of one sample (0 when absent), e.g. value(t, "pipeline_runs_started_total", pipeline="p")."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def local(sample: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(sample, labels) or 0.0


# --- counted from log lines ------------------------------------------------------------------------
def test_transition_log_lines_update_counters_and_histograms():
    log = structlog.get_logger("tests.metrics")
    before = {
        "started": local("pipeline_runs_started_total", pipeline="unit"),
        "succeeded": local("pipeline_runs_finished_total", pipeline="unit", outcome="succeeded"),
        "failed": local("pipeline_runs_finished_total", pipeline="unit", outcome="failed"),
        "retries": local("pipeline_stage_retries_total", pipeline="unit", stage="s"),
        "stage_count": local("pipeline_stage_duration_seconds_count", pipeline="unit", stage="s", outcome="succeeded"),
        "stage_sum": local("pipeline_stage_duration_seconds_sum", pipeline="unit", stage="s", outcome="succeeded"),
        "fires": local("pipeline_schedule_fire_delay_seconds_count", schedule="unit_schedule"),
        "fire_sum": local("pipeline_schedule_fire_delay_seconds_sum", schedule="unit_schedule"),
    }
    log.info("run.started", pipeline="unit")
    log.info("stage.retrying", pipeline="unit", stage="s", duration_ms=5.0, retry_in_ms=100)
    log.info("stage.succeeded", pipeline="unit", stage="s", duration_ms=250.0)
    log.info("run.succeeded", pipeline="unit", duration_ms=300.0)
    log.info("run.failed", pipeline="unit", duration_ms=10.0)
    with structlog.contextvars.bound_contextvars(schedule_id="unit_schedule"):
        log.info("schedule.fired", reason="schedule", fire_delay_ms=40.0)
        log.info("schedule.fired", reason="backfill", fire_delay_ms=86_400_000.0)  # late on purpose: not a delay
    log.debug("run.started", pipeline="unit")  # below the level: never written, never counted
    import logging

    logging.getLogger("tests.metrics.stdlib").warning("run.started")  # a standard-library line: not ours

    assert local("pipeline_runs_started_total", pipeline="unit") == before["started"] + 1
    assert local("pipeline_runs_finished_total", pipeline="unit", outcome="succeeded") == before["succeeded"] + 1
    assert local("pipeline_runs_finished_total", pipeline="unit", outcome="failed") == before["failed"] + 1
    assert local("pipeline_stage_retries_total", pipeline="unit", stage="s") == before["retries"] + 1
    assert local("pipeline_stage_duration_seconds_count", pipeline="unit", stage="s",
                 outcome="succeeded") == before["stage_count"] + 1
    assert local("pipeline_stage_duration_seconds_sum", pipeline="unit", stage="s",
                 outcome="succeeded") == pytest.approx(before["stage_sum"] + 0.25)
    assert local("pipeline_schedule_fire_delay_seconds_count", schedule="unit_schedule") == before["fires"] + 1
    assert local("pipeline_schedule_fire_delay_seconds_sum", schedule="unit_schedule") == pytest.approx(
        before["fire_sum"] + 0.04)


# --- web --------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_web_metrics_show_the_outbox_backlog_and_the_age_of_its_oldest_event(client):
    Event.objects.create(type="test.started", payload={}, occurred_at=timezone.now() - timedelta(seconds=120),
                         trace_id="0" * 32)
    Event.objects.create(type="test.started", payload={}, occurred_at=timezone.now(), trace_id="1" * 32)
    Event.objects.create(type="test.started", payload={}, occurred_at=timezone.now() - timedelta(hours=1),
                         trace_id="2" * 32, published_at=timezone.now())
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert value(text, "pipeline_store_up") == 1
    assert value(text, "pipeline_outbox_unpublished_events") == 2
    assert 120 <= value(text, "pipeline_outbox_oldest_unpublished_age_seconds") < 180


@pytest.mark.django_db
def test_web_metrics_say_the_broker_is_down_instead_of_failing(client, settings):
    settings.PIPELINE_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert value(text, "pipeline_broker_up") == 0
    assert "pipeline_queue_messages" not in text
    assert value(text, "pipeline_store_up") == 1


# --- a demo run through a real worker of two processes, and a real scheduler -------------------------
@pytest.mark.broker
def test_after_a_demo_run_every_endpoint_shows_its_metrics_with_real_values(
    transactional_db, test_database_url, client, monkeypatch, tmp_path
):
    worker_port, scheduler_port = free_port(), free_port()
    purge_queues("killable")
    monkeypatch.setenv("PIPELINE_WORKER_METRICS_PORT", str(worker_port))
    monkeypatch.setenv("PIPELINE_METRICS_DIR", str(tmp_path / "prometheus"))
    worker = start_worker(test_database_url, "metrics-worker", processes=2, threads=4, queue="killable")
    scheduler = None
    try:
        for _ in range(6):
            emit("test.killable", {"sleep": 0})
        emit("test.killable", {"sleep": -1})  # time.sleep(-1) raises: 3 retries, then the run fails
        wait_for(lambda: Run.objects.filter(pipeline="killable", status__in=["succeeded", "failed"]).count() == 7,
                 60, "7 killable runs to finish", interval=0.3)
        assert Run.objects.filter(pipeline="killable", status="failed").count() == 1

        # Worker: the sum over both worker processes, served on one port.
        text = wait_for(lambda: (t := scrape(worker_port)) and value(
            t, "pipeline_runs_finished_total", pipeline="killable") == 7 and t, 30, "the worker's counters")
        assert value(text, "pipeline_runs_started_total", pipeline="killable") == 7
        assert value(text, "pipeline_runs_finished_total", pipeline="killable", outcome="succeeded") == 6
        assert value(text, "pipeline_runs_finished_total", pipeline="killable", outcome="failed") == 1
        assert value(text, "pipeline_stage_retries_total", pipeline="killable", stage="slow") == 3
        assert value(text, "pipeline_stage_duration_seconds_count", pipeline="killable", stage="slow",
                     outcome="succeeded") == 6
        assert value(text, "pipeline_stage_duration_seconds_count", pipeline="killable", stage="slow",
                     outcome="failed") == 1
        assert value(text, "pipeline_stage_duration_seconds_count", pipeline="killable", stage="before_kill") == 7
        assert value(text, "pipeline_stage_duration_seconds_sum", pipeline="killable") > 0
        assert value(text, "pipeline_run_duration_seconds_count", pipeline="killable") == 7
        written = {p.name.rsplit("_", 1)[-1] for p in (tmp_path / "prometheus").glob("worker-*/*.db")}
        assert written, "the worker processes wrote no multiprocess files"

        # Web: the failed run's message is dead-lettered; both worker processes consume the queue.
        web = wait_for(lambda: (t := client.get("/metrics").content.decode()) and value(
            t, "pipeline_queue_messages", queue="killable.XQ") >= 1 and t, 30, "the dead letter to show")
        assert value(web, "pipeline_broker_up") == 1
        assert value(web, "pipeline_queue_consumers", queue="killable") == 2
        assert value(web, "pipeline_queue_messages", queue="killable") == 0
        assert value(web, "pipeline_events_emitted_total", type="test.killable") >= 7  # emitted from this process

        # Scheduler: its own endpoint, with the delay of each on-time fire.
        scheduler = ManagedProcess(
            "metrics-scheduler", [sys.executable, "manage.py", "runscheduler", "--only", "tick_every_second"],
            child_env(test_database_url, PIPELINE_SCHEDULER_METRICS_PORT=str(scheduler_port)),
        )

        def fired_twice():
            try:
                t = scrape(scheduler_port)
            except OSError:
                return None
            fired = value(t, "pipeline_schedule_fire_delay_seconds_count", schedule="tick_every_second") >= 2
            # (each scrape checks the store and the broker with a short bound: a loaded machine may miss one)
            return t if fired and value(t, "pipeline_store_up") == 1 and value(t, "pipeline_broker_up") == 1 else None

        sched = wait_for(fired_twice, 60, "two fires and both checks up on the scheduler's endpoint", interval=0.5)
        assert value(sched, "pipeline_schedule_fire_delay_seconds_sum", schedule="tick_every_second") > 0
        assert value(sched, "pipeline_schedule_fires_total", schedule="tick_every_second", reason="schedule") >= 2
        assert value(sched, "pipeline_store_up") == 1 and value(sched, "pipeline_broker_up") == 1
        assert "pipeline_outbox_unpublished_events" in families(sched)

        for text_of_kind in (text, web, sched):
            assert_prometheus_conventions(text_of_kind)
    finally:
        if scheduler is not None:
            scheduler.stop()
        worker.stop()
        purge_queues("killable", "pipeline")


OUR_FAMILIES = ("pipeline_runs_started", "pipeline_runs_finished", "pipeline_run_duration_seconds",
                "pipeline_stage_duration_seconds", "pipeline_stage_retries", "pipeline_events_emitted",
                "pipeline_schedule_fires", "pipeline_schedule_fire_delay_seconds")


@pytest.mark.broker  # a real process (the slow tier)
def test_an_idle_worker_endpoint_shows_every_family_with_zeros_before_its_first_transition(
    transactional_db, test_database_url, client, monkeypatch, tmp_path
):
    port = free_port()
    purge_queues("killable")
    monkeypatch.setenv("PIPELINE_WORKER_METRICS_PORT", str(port))
    monkeypatch.setenv("PIPELINE_METRICS_DIR", str(tmp_path / "prometheus"))
    worker = start_worker(test_database_url, "metrics-idle-worker", processes=1, threads=1, queue="killable")
    try:
        def scraped():
            try:
                return scrape(port)
            except OSError:
                return None

        text = wait_for(scraped, 30, "the idle worker's endpoint", interval=0.3)
    finally:
        worker.stop()
    assert Run.objects.count() == 0  # nothing ran: what shows are the declared families
    found = families(text)
    for name in OUR_FAMILIES:
        assert name in found and found[name].documentation, name
    zeros = {(s.name, s.labels.get("pipeline"), s.labels.get("outcome")): s.value
             for s in found["pipeline_runs_finished"].samples + found["pipeline_runs_started"].samples}
    assert zeros[("pipeline_runs_finished_total", "killable", "failed")] == 0
    assert zeros[("pipeline_runs_started_total", "killable", None)] == 0
    assert value(text, "pipeline_stage_retries_total", pipeline="killable", stage="slow") == 0
    assert any(s.labels == {"pipeline": "killable", "stage": "slow"} for s in found["pipeline_stage_retries"].samples)
    assert_prometheus_conventions(text)
    assert client.get("/metrics")["Content-Type"] == CONTENT_TYPE_LATEST


def assert_prometheus_conventions(text: str) -> None:
    ours = [f for f in text_string_to_metric_families(text) if f.name.startswith("pipeline_")]
    assert ours
    for family in ours:
        assert NAME.match(family.name), family.name
        assert family.documentation, f"{family.name} has no help text"
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), f"{family.name}: durations are histograms in seconds"
        if family.type == "gauge":
            assert not family.name.endswith("_total"), family.name
        for sample in family.samples:
            assert all(NAME.match(label) for label in sample.labels), sample


@pytest.mark.store_independent
def test_the_workers_metrics_folder_is_the_setting_else_under_the_var_folder_never_beside_the_source(
        settings, monkeypatch, tmp_path):
    settings.PIPELINE_METRICS_DIR = str(tmp_path / "chosen")
    assert metrics_base_dir() == tmp_path / "chosen"
    settings.PIPELINE_METRICS_DIR = ""
    monkeypatch.delenv("PIPELINE_METRICS_DIR", raising=False)
    monkeypatch.setenv("PIPELINE_VAR_DIR", str(tmp_path / "var"))
    assert metrics_base_dir() == tmp_path / "var" / "prometheus"
    monkeypatch.delenv("PIPELINE_VAR_DIR")
    assert metrics_base_dir() == Path("var") / "prometheus"  # like PIPELINE_LOG_DIR's var/log: the working directory's
