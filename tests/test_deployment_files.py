"""The deployment files in infra/ parse, and say what the processes need: the right commands,
probes that exist, grace periods longer than the drains they wrap, KEDA scaling workers on the
stage queue down to zero. No Docker engine or cluster here: each file is parsed and checked, the
Kubernetes set is built with `kubectl kustomize` and the systemd units checked with
`systemd-analyze verify` where those tools exist, and the gunicorn configuration serves for real."""
from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands
from django.urls import resolve

from pipeline import conf
from tests.conftest import ROOT, child_env, purge_queues, wait_for

INFRA = ROOT / "infra"
APP_COMMANDS = {"rundramatiq", "runscheduler", "migrate", "workerhealth"}


def grace_ms(command: list[str]) -> int:
    return int(command[command.index("--worker-shutdown-timeout") + 1])


def duration_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)?", str(text))
    assert match, text
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[match[2]]


def manage_command(command: list[str]) -> str | None:
    return command[command.index("manage.py") + 1] if "manage.py" in command else None


# --- compose ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def test_compose_runs_web_workers_two_schedulers_rabbitmq_with_management_and_postgresql(compose):
    services = compose["services"]
    assert {"web", "worker", "scheduler-1", "scheduler-2", "rabbitmq", "postgres", "migrate"} <= set(services)
    assert "management" in services["rabbitmq"]["image"]
    assert services["postgres"]["image"].startswith("postgres:")
    schedulers = [s for s in services.values() if manage_command(s.get("command", [])) == "runscheduler"]
    assert len(schedulers) == 2
    for name, service in services.items():
        if name != "migrate":
            assert service["healthcheck"]["test"], f"{name} has no healthcheck"
        command = service.get("command")
        if isinstance(command, list) and manage_command(command):
            assert manage_command(command) in get_commands(), f"{name}: no such command"
    assert manage_command(services["worker"]["healthcheck"]["test"][1:]) == "workerhealth"
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])


def test_compose_app_services_share_postgresql_and_rabbitmq_with_heartbeats(compose):
    services = compose["services"]
    for name in ("web", "worker", "scheduler-1", "scheduler-2", "migrate"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"], name
        assert env["PIPELINE_BROKER_URL"].startswith("amqp://") and "@rabbitmq:5672/" in env["PIPELINE_BROKER_URL"]
        assert "heartbeat=" in env["PIPELINE_BROKER_URL"]
        assert env["DJANGO_DEBUG"] == "0" and env["DJANGO_SECRET_KEY"]
        if name != "migrate":
            assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
            assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert services["worker"]["environment"]["PIPELINE_WORKER_METRICS_PORT"]
    assert services["scheduler-1"]["environment"]["PIPELINE_SCHEDULER_METRICS_PORT"]
    assert "consumer_timeout" in services["rabbitmq"]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]


def test_compose_gives_workers_longer_to_stop_than_their_drain(compose):
    worker = compose["services"]["worker"]
    assert duration_seconds(worker["stop_grace_period"]) > grace_ms(worker["command"]) / 1000
    web = compose["services"]["web"]
    gunicorn = runpy.run_path(str(INFRA / "gunicorn.conf.py"))
    assert duration_seconds(web["stop_grace_period"]) > gunicorn["graceful_timeout"]


def test_the_image_the_deployment_files_use_builds_from_files_that_exist(compose):
    dockerfile = compose["services"]["web"]["build"]
    path = (INFRA / dockerfile["context"] / dockerfile["dockerfile"]).resolve()
    assert path == INFRA / "Dockerfile"
    for line in path.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert '"infra/gunicorn.conf.py"' in path.read_text()


# --- Kubernetes -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def k8s() -> list[dict]:
    docs = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def containers(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"]


def test_every_kubernetes_object_is_well_formed_and_listed_in_the_kustomization(k8s):
    for doc in k8s:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc
    listed = yaml.safe_load((INFRA / "k8s" / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in (INFRA / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    config = {d["metadata"]["name"] for d in k8s if d["kind"] in ("ConfigMap", "Secret")}
    for deployment in find(k8s, "Deployment") + [j["spec"] for j in find(k8s, "Job")]:
        spec = deployment["spec"] if "spec" in deployment else deployment
        template = spec["template"]
        if "selector" in spec:
            assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        for container in template["spec"]["containers"]:
            assert container["image"] and container["name"]
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                assert ref["name"] in config
            command = manage_command(container.get("command", []))
            assert command is None or command in APP_COMMANDS & set(get_commands())


def test_kubernetes_runs_web_workers_and_two_schedulers_with_real_probes(k8s):
    [web] = find(k8s, "Deployment", "django-pipelines-web")
    [worker] = find(k8s, "Deployment", "django-pipelines-worker")
    [scheduler] = find(k8s, "Deployment", "django-pipelines-scheduler")
    assert scheduler["spec"]["replicas"] == 2
    [web_container] = containers(web)
    assert resolve(web_container["livenessProbe"]["httpGet"]["path"]).func.__name__ == "healthz"
    assert resolve(web_container["readinessProbe"]["httpGet"]["path"]).func.__name__ == "readyz"
    [service] = find(k8s, "Service", "django-pipelines-web")
    assert service["spec"]["selector"].items() <= web["spec"]["template"]["metadata"]["labels"].items()
    port_names = {p["name"] for p in web_container["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    gunicorn = runpy.run_path(str(INFRA / "gunicorn.conf.py"))
    assert web["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > gunicorn["graceful_timeout"]

    [worker_container] = containers(worker)
    assert manage_command(worker_container["command"]) == "rundramatiq"
    probe = worker_container["livenessProbe"]["exec"]["command"]
    assert manage_command(probe) == "workerhealth"
    processes = int(worker_container["command"][worker_container["command"].index("--processes") + 1])
    assert int(probe[probe.index("--min-processes") + 1]) == processes
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > grace_ms(worker_container["command"]) / 1000, "the kubelet would kill the drain"


def test_keda_scales_workers_on_the_stage_queue_down_to_zero(k8s):
    [scaled] = find(k8s, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "django-pipelines-worker"
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 2
    queues = {t["metadata"]["queueName"]: t for t in spec["triggers"] if t["type"] == "rabbitmq"}
    default_queue = conf.DEFAULTS["PIPELINE_DEFAULT_QUEUE"]
    assert {default_queue, f"{default_queue}.DQ"} <= set(queues), "retries waiting in .DQ must wake workers too"
    [secret] = find(k8s, "Secret")
    for trigger in queues.values():
        assert trigger["metadata"]["mode"] == "QueueLength" and int(trigger["metadata"]["value"]) > 0
        [auth] = find(k8s, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_builds_the_kustomization():
    result = subprocess.run(["kubectl", "kustomize", str(INFRA / "k8s")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(result.stdout) if d)
    assert kinds.count("Deployment") == 3 and "ScaledObject" in kinds
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "django-pipelines"
               for d in yaml.safe_load_all(result.stdout) if d)


# --- systemd ----------------------------------------------------------------------------------------
def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path.name}: {line} outside a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


UNITS = sorted((INFRA / "systemd").iterdir())


@pytest.mark.parametrize("path", UNITS, ids=[p.name for p in UNITS])
def test_each_systemd_unit_is_complete(path):
    sections = unit(path)
    assert sections["Unit"]["Description"]
    if path.suffix == ".service":
        service = sections["Service"]
        [exec_start] = service["ExecStart"]
        assert exec_start.startswith("/"), "ExecStart needs an absolute path"
        command = exec_start.split()
        assert manage_command(command) in (None, *get_commands())
        if service.get("Type") != ["oneshot"]:
            assert service["Restart"] == ["always"] and service["KillMode"] == ["mixed"]
            assert "Install" in sections


def test_the_systemd_worker_drains_before_systemd_kills_it():
    service = unit(INFRA / "systemd" / "django-pipelines-worker@.service")["Service"]
    assert service["KillMode"] == ["mixed"], "SIGTERM must reach the master only"
    assert int(service["TimeoutStopSec"][0]) > grace_ms(service["ExecStart"][0].split()) / 1000
    assert "PIPELINE_WORKER_METRICS_PORT=%i" in service["Environment"]
    wanted = unit(INFRA / "systemd" / "django-pipelines.target")["Unit"]["Wants"][0].split()
    for name in wanted:
        template = re.sub(r"@[^.]+\.", "@.", name)
        assert (INFRA / "systemd" / template).exists(), name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_units(tmp_path):
    """The units as installed from this checkout (paths pointed at it, as root, env file optional)."""
    for path in UNITS:
        text = (path.read_text().replace("/opt/django-pipelines", str(ROOT))
                .replace("EnvironmentFile=/etc", "EnvironmentFile=-/etc")
                .replace("User=pipelines", "User=root").replace("Group=pipelines", "Group=root"))
        (tmp_path / path.name).write_text(text)
    shutil.copy(tmp_path / "django-pipelines-worker@.service", tmp_path / "django-pipelines-worker@9300.service")
    files = sorted(str(p) for p in tmp_path.iterdir())
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *files], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"))
    assert result.returncode == 0, result.stdout + result.stderr


# --- gunicorn ---------------------------------------------------------------------------------------
def test_the_gunicorn_configuration_serves_the_django_project_with_threads():
    config = runpy.run_path(str(INFRA / "gunicorn.conf.py"))
    assert config["wsgi_app"] == "web.wsgi:application"
    assert config["worker_class"] == "gthread" and config["threads"] >= 2 and config["workers"] >= 2
    assert config["graceful_timeout"] <= config["timeout"]
    assert config["preload_app"] is False
    for hook in ("on_starting", "child_exit", "on_exit"):
        assert callable(config[hook])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


@pytest.mark.broker
def test_gunicorn_with_this_configuration_answers_probes_and_sums_metrics_over_its_workers(
    transactional_db, test_database_url, tmp_path
):
    port = free_port()
    env = child_env(test_database_url, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="2",
                    GUNICORN_THREADS="2", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    gunicorn = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", "infra/gunicorn.conf.py"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=open(tmp_path / "gunicorn.err", "wb"), start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up():
            try:
                return get(f"{base}/healthz")
            except OSError:
                return None

        assert wait_for(up, 90, "gunicorn to answer") == (200, json.dumps({"status": "ok"}))
        wait_for(lambda: get(f"{base}/readyz")[0] == 200, 60, "gunicorn to be ready (store and broker)")
        order = json.dumps({"customer_email": "a@b.c", "items": [{"sku": "X", "quantity": 1}], "total_cents": 100})
        for _ in range(4):
            request = urllib.request.Request(f"{base}/shop/orders", data=order.encode(),
                                             headers={"Content-Type": "application/json"})
            assert urllib.request.urlopen(request, timeout=60).status == 201
        for _ in range(8):  # whichever worker answers, it reports the sum of both
            status, text = get(f"{base}/metrics")
            assert status == 200
            assert 'pipeline_events_emitted_total{type="order.placed"} 4.0' in text
        assert list((tmp_path / "prom").glob("*.db")), "no multiprocess files: each worker counted alone"
    finally:
        os.kill(gunicorn.pid, signal.SIGTERM)  # the master, as systemd (KillMode=mixed) and Kubernetes do
        try:
            gunicorn.wait(30)
        finally:
            if gunicorn.poll() is None:
                os.killpg(gunicorn.pid, signal.SIGKILL)
                gunicorn.wait(10)
        purge_queues("pipeline")  # the orders' runs: their rows go with this test's database
    assert gunicorn.returncode == 0, (tmp_path / "gunicorn.err").read_text(errors="replace")[-3000:]
    assert not (tmp_path / "prom").exists(), "gunicorn left its metrics directory behind"


# --- the 3-node cluster recipe ---------------------------------------------------------------------
def test_the_cluster_recipe_runs_three_clustered_nodes_and_every_process_lists_them_with_quorum_queues(compose):
    cluster = yaml.safe_load((INFRA / "compose.cluster.yaml").read_text())
    nodes = {name: s for name, s in cluster["services"].items() if name.startswith("rabbitmq")}
    assert set(nodes) == {"rabbitmq", "rabbitmq-2", "rabbitmq-3"}
    assert len({s["environment"]["RABBITMQ_ERLANG_COOKIE"] for s in nodes.values()}) == 1
    assert len({s["hostname"] for s in nodes.values()}) == 3
    config = (INFRA / "rabbitmq-cluster.conf").read_text()
    for name, node in nodes.items():
        assert any("rabbitmq-cluster.conf" in v for v in node["volumes"]), name
        assert f"rabbit@{node['hostname']}" in config
    from pipeline._broker import broker_urls

    app = [name for name, s in compose["services"].items() if "PIPELINE_BROKER_URL" in s.get("environment", {})]
    assert app
    for name in app:
        env = cluster["services"][name]["environment"]
        assert env["PIPELINE_QUEUE_TYPE"] == "quorum"
        hosts = [u.split("@")[1].split(":")[0] for u in broker_urls(env["PIPELINE_BROKER_URL"])]
        assert hosts == ["rabbitmq", "rabbitmq-2", "rabbitmq-3"], name
