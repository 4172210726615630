"""From nothing to a run, as a new user would: build the wheel, install it into a fresh virtual
environment, `django-admin startproject mysite`, add the apps, settings and URLs exactly as
docs/getting-started.md says (its code blocks marked `from-nothing` are read from the page), write
a two-stage pipeline and a schedule in a new app, migrate, and then

(a) in-process: the app's own tests, written with `pipeline.testing` (`PipelinesTestMixin`: the
    two-stage pipeline run in the test process, a retry injected with `fail()`, a schedule fired
    through `schedules.testing.ScheduleClock`), run by the command docs/testing.md gives
    (`manage.py test`) inside that project; the tests and the command are that page's marked
    blocks (the pipeline's log lines prove it ran in-process);
(b) against the real broker: `rundramatiq`, `runscheduler` and `runserver` as processes, an event
    posted to the API under the docs' URL prefix, its run seen `succeeded` in `/api/runs/<id>` and
    on the dashboard's run page, and the schedule's runs too.

It runs in both passes of `make test`: on the PostgreSQL pass the project's database is a fresh
database on the suite's PostgreSQL server (the wheel's `[postgres]` extra brings psycopg). On the
shared test broker the project's pipelines use a queue of their own (PIPELINE_DEFAULT_QUEUE), so
the suite's workers and this project's never take each other's messages."""
from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tests.conftest import ROOT, ManagedProcess, purge_queues, wait_for
from tests.wheels import built_wheel

pytestmark = [pytest.mark.broker, pytest.mark.timeout(900)]

DOC_PAGES = (ROOT / "docs" / "getting-started.md", ROOT / "docs" / "testing.md")
BLOCK = re.compile(r"<!-- from-nothing: (\S+) -->\n```(?:python|sh)\n(.*?)```", re.S)
INSTALL_TIMEOUT = 600  # a clean install from the package index on a slow CI machine
WAIT = 120  # generous bounds for a busy 2-core machine; every wait ends on its condition


def doc_blocks() -> dict[str, str]:
    """The docs' code blocks marked `<!-- from-nothing: NAME -->`: NAME -> code (python or sh)."""
    return dict(BLOCK.findall("".join(page.read_text() for page in DOC_PAGES)))


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel (and its PostgreSQL extra) installed from the
    package index, dependencies and all: no --system-site-packages, no shortcut. Measured on the
    2-core machine: about 30 s (pip's own cache makes later sessions faster), so nothing is gained
    by a shortcut that a fresh CI machine would not have.

    The two passes of one `make test` (which run at the same time) share it: infra/test.sh gives
    both a folder of that run's own (TEST_SHARED_DIR, removed when the run ends), the first pass to
    get there makes the environment under a lock, the other waits for it and uses it. Nothing is
    installed into it afterwards, so sharing it changes nothing the tests see."""
    shared = os.environ.get("TEST_SHARED_DIR")
    if not shared:
        return _make_venv(tmp_path_factory.mktemp("from-nothing") / "venv")
    path = Path(shared) / "from-nothing-venv"
    with open(Path(shared) / "from-nothing-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / ".complete").exists():
            shutil.rmtree(path, ignore_errors=True)
            _make_venv(path)
            (path / ".complete").touch()
    return path


def _make_venv(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "venv", str(path)], cwd=path.parent)
    run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", f"{built_wheel()}[postgres]"],
        cwd=path.parent, timeout=INSTALL_TIMEOUT)
    return path


@pytest.fixture(scope="module")
def project_database():
    """None on the SQLite pass (the project keeps the docs' SQLite file); on the PostgreSQL pass,
    the URL of a fresh database on the suite's server, dropped afterwards."""
    suite = settings.DATABASES["default"]
    if "postgresql" not in suite["ENGINE"]:
        yield None
        return
    import psycopg

    name = f"mysite_{uuid.uuid4().hex[:10]}"
    server = dict(host=suite.get("HOST") or "127.0.0.1", port=suite.get("PORT") or 5432, user=suite["USER"],
                  password=suite.get("PASSWORD") or None, dbname="postgres", autocommit=True)
    with psycopg.connect(**server) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield (f"postgres://{suite['USER']}:{suite.get('PASSWORD') or ''}@{server['host']}:{server['port']}/{name}")
    with psycopg.connect(**server) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def mysite(venv, project_database, tmp_path_factory):
    """`django-admin startproject mysite`, set up as the docs say, migrated; yields (folder, env)."""
    folder = tmp_path_factory.mktemp("from-nothing") / "mysite"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIPELINE_", "DJANGO_", "DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV"))}
    queue = f"fromnothing-{uuid.uuid4().hex[:8]}"
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
               PIPELINE_BROKER_URL=settings.PIPELINE_BROKER_URL, PIPELINE_LOG_DIR=str(folder / "log"),
               MYSITE_QUEUE=queue)
    if project_database:
        env["MYSITE_DATABASE_URL"] = project_database
    python = str(venv / "bin" / "python")
    run([str(venv / "bin" / "django-admin"), "startproject", "mysite", "."], cwd=folder, env=env)
    run([python, "manage.py", "startapp", "shipping"], cwd=folder, env=env)

    blocks = doc_blocks()
    settings_py = folder / "mysite" / "settings.py"
    text = settings_py.read_text()
    assert "'django.contrib.staticfiles',\n" in text
    text = text.replace("'django.contrib.staticfiles',\n", "'django.contrib.staticfiles',\n    'shipping',\n")
    text += "\n" + blocks["settings"] + (
        "\n# --- the from-nothing test's own lines, not the docs' ---\n"
        "import os\nimport dj_database_url\n"
        "if os.environ.get('MYSITE_DATABASE_URL'):\n"
        "    DATABASES = {'default': dj_database_url.parse(os.environ['MYSITE_DATABASE_URL'])}\n"
        "PIPELINE_DEFAULT_QUEUE = os.environ['MYSITE_QUEUE']  # its own queue on the suite's shared broker\n")
    settings_py.write_text(text)
    urls_py = folder / "mysite" / "urls.py"
    urls_py.write_text(urls_py.read_text() + "\n" + blocks["urls"])
    files = [name for name in blocks if "/" in name]  # the app's modules, its tests (and any file a page adds)
    assert {"shipping/pipelines.py", "shipping/schedules.py", "shipping/tests.py"} <= set(files), sorted(blocks)
    for name in files:
        (folder / name).write_text(blocks[name])

    # The engine comes from the wheel in the venv, not from this checkout.
    where = run([python, "-c", "import pipeline, web.dashboard; print(pipeline.__file__, web.dashboard.__file__)"],
                cwd=folder, env=env)
    assert where.count(str(venv)) == 2, where
    run([python, "manage.py", "migrate", "--noinput"], cwd=folder, env=env)
    yield folder, env
    purge_queues(queue)


def test_a_new_project_runs_its_pipeline_in_process_in_its_own_tests(mysite, venv):
    folder, env = mysite
    # The command docs/testing.md gives (whatever runner it names), with the venv's python.
    (command,) = [line for line in doc_blocks()["command"].splitlines() if line.strip()]
    args = shlex.split(command)
    assert args[0] == "python", command
    log_dir = folder / "log-in-process"
    output = run([str(venv / "bin" / "python"), *args[1:]], cwd=folder,
                 env={**env, "PIPELINE_LOG_DIR": str(log_dir), "PIPELINE_LOG_FORMAT": "none"})
    assert re.search(r"\bRan [1-9]\d* tests?\b|\b[1-9]\d* passed\b", output), output
    # The pipeline really ran in that process, both stages, to its end; the injected failure was
    # retried; the schedule's fires ran it too.
    lines = [json.loads(line) for path in log_dir.glob("*.jsonl") for line in path.read_text().splitlines()]
    succeeded = {line["stage"] for line in lines if line.get("event") == "stage.succeeded"
                 and line.get("pipeline") == "ship_parcel"}
    assert succeeded == {"print_label", "hand_to_carrier"}, output
    assert any(line.get("event") == "run.succeeded" and line.get("pipeline") == "ship_parcel" for line in lines)
    assert any(line.get("event") == "stage.retrying" and line.get("stage") == "print_label" for line in lines), output
    assert any(line.get("event") == "schedule.fired" and line.get("schedule_id") == "parcel_sweep" for line in lines), output


def test_a_new_project_runs_its_pipeline_and_schedule_on_the_real_broker(mysite, venv):
    folder, env = mysite
    python = str(venv / "bin" / "python")
    prefix = "/" + re.search(r'path\("([^"]+)", include\("web.routes"\)\)', doc_blocks()["urls"]).group(1)
    run([python, "manage.py", "devsetup"], cwd=folder, env=env)
    token = (folder / "var" / "dev-api-token").read_text().strip()
    password = (folder / "var" / "dev-admin-password").read_text().strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes = [
        ManagedProcess("from-nothing-web", [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                       env, cwd=folder),
        ManagedProcess("from-nothing-worker", [python, "manage.py", "rundramatiq", "--processes", "1",
                                               "--threads", "2"], env, cwd=folder),
        ManagedProcess("from-nothing-scheduler", [python, "manage.py", "runscheduler"], env, cwd=folder),
    ]
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    try:
        wait_for(lambda: _answers(f"{base}{prefix}healthz"), WAIT, "the project's web server")

        # The API under the prefix: its document says where it is, its errors are JSON.
        document = requests.get(f"{base}{prefix}api/openapi.json", timeout=30).json()
        assert document["servers"] == [{"url": f"{base}{prefix}".rstrip("/")}]
        missing = api.get(f"{base}{prefix}api/nothing-here", timeout=30)
        assert missing.status_code == 404 and "error" in missing.json()

        posted = api.post(f"{base}{prefix}api/events", timeout=30,
                          json={"type": "parcel.booked", "payload": {"parcel_id": 7, "weight_grams": 1200}})
        assert posted.status_code == 202, posted.text
        event_id = posted.json()["event_id"]
        runs = wait_for(lambda: api.get(f"{base}{prefix}api/events/{event_id}", timeout=30).json().get("runs"),
                        WAIT, "the event's run")
        run_id = runs[0]["run_id"]
        done = wait_for(lambda: _finished(api, f"{base}{prefix}api/runs/{run_id}"), WAIT, "the run to finish")
        assert done["status"] == "succeeded", done
        assert [(s["stage"], s["status"]) for s in done["stages"]] == [
            ("print_label", "succeeded"), ("hand_to_carrier", "succeeded")]
        assert done["stages"][1]["result"] == {"carrier": "post", "label": "LBL-7"}

        # The schedule fires through the scheduler process, and its runs succeed the same way.
        scheduled = wait_for(lambda: [r for r in api.get(f"{base}{prefix}api/runs", params={"pipeline": "ship_parcel"},
                                                         timeout=30).json()["runs"]
                                      if r["trigger"].startswith("schedule:parcel_sweep@")
                                      and r["status"] == "succeeded"], WAIT, "a succeeded run of the schedule")
        assert scheduled

        # The dashboard's run page, after the admin's login, under the same prefix.
        browser = requests.Session()
        page = browser.get(f"{base}{prefix}dashboard/runs/{run_id}/", timeout=30)
        assert page.url.startswith(f"{base}/admin/login/"), page.url  # staff only: sent to the admin's login
        browser.post(page.url, timeout=30, data={
            "username": "admin", "password": password, "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            "next": f"{prefix}dashboard/runs/{run_id}/"}, headers={"Referer": page.url})
        page = browser.get(f"{base}{prefix}dashboard/runs/{run_id}/", timeout=30)
        assert page.status_code == 200 and page.url == f"{base}{prefix}dashboard/runs/{run_id}/"
        assert run_id in page.text and "succeeded" in page.text and "hand_to_carrier" in page.text
        stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+)"', page.text).group(1)
        assert browser.get(f"{base}{stylesheet}", timeout=30).status_code == 200
        assert f'href="{prefix}dashboard/runs/"' in page.text
    finally:
        for process in reversed(processes):
            process.stop()
    logs = (folder / "log" / "worker.jsonl").read_text()
    assert f'"run_id":"{run_id}"' in logs and '"event":"run.succeeded"' in logs


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _finished(api: requests.Session, url: str) -> dict | None:
    run = api.get(url, timeout=30).json()
    return run if run["status"] in ("succeeded", "failed", "cancelled") else None
