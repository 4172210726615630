"""The wheel (`python -m build`) carries the engine, the scheduler, the API, the dashboard and the
webhooks with their templates, static files, migrations and commands, and nothing of the demo shop
or of this repository's own project; `pipeline.project.pipeline_settings` gives a project the same
set-up this repository's project uses; and `web.routes` works under any prefix. The from-nothing
test (`tests/test_from_nothing.py`) installs that wheel into a fresh project."""
from __future__ import annotations

import ast
import zipfile
from pathlib import Path

import django
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from pipeline.project import pipeline_settings
from tests.prefixed_urls import PREFIX
from tests.wheels import built_wheel


def _startproject_settings() -> dict[str, list[str]]:
    """INSTALLED_APPS and MIDDLEWARE as `django-admin startproject` writes them (its template)."""
    template = Path(django.__file__).parent / "conf" / "project_template" / "project_name" / "settings.py-tpl"
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(template.read_text()).body
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("INSTALLED_APPS", "MIDDLEWARE")}


_STARTPROJECT = _startproject_settings()
DJANGO_APPS, DJANGO_MIDDLEWARE = _STARTPROJECT["INSTALLED_APPS"], _STARTPROJECT["MIDDLEWARE"]


@pytest.fixture(scope="module")
def wheel_names() -> set[str]:
    with zipfile.ZipFile(built_wheel()) as wheel:
        return set(wheel.namelist())


@pytest.mark.store_independent
def test_the_wheel_carries_the_public_apps_with_their_templates_static_files_migrations_and_commands(wheel_names):
    expected = {
        "pipeline/__init__.py", "pipeline/project.py", "pipeline/migrations/0001_initial.py",
        "pipeline/management/commands/rundramatiq.py", "pipeline/management/commands/emit.py",
        "pipeline/management/commands/trace.py", "pipeline/middleware/__init__.py",
        "schedules/__init__.py", "schedules/migrations/0001_initial.py",
        "schedules/management/commands/runscheduler.py",
        "web/__init__.py", "web/routes.py", "web/health.py",
        "web/api/urls.py", "web/api/migrations/0001_initial.py", "web/api/management/commands/devsetup.py",
        "web/webhooks/models.py", "web/webhooks/migrations/0001_initial.py",
        "web/dashboard/urls.py", "web/dashboard/templates/dashboard/base.html",
        "web/dashboard/templates/dashboard/run_detail.html", "web/dashboard/static/dashboard/dashboard.css",
        "web/dashboard/static/dashboard/dashboard.js",
    }
    assert expected <= wheel_names, sorted(expected - wheel_names)


@pytest.mark.store_independent
def test_the_wheel_leaves_out_the_demo_shop_and_this_repositorys_project(wheel_names):
    ours = [n for n in wheel_names if not n.startswith("django_pipelines-")]
    assert [n for n in ours if n.startswith("web/shop/")] == []
    assert {"web/settings.py", "web/urls.py", "web/wsgi.py", "manage.py"} & wheel_names == set()
    assert {n.split("/", 1)[0] for n in ours} == {"pipeline", "schedules", "web"}  # no tests/, infra/, docs/


@pytest.mark.store_independent
def test_the_settings_helper_gives_what_this_repositorys_project_uses():
    from web import settings as project

    given = pipeline_settings(DJANGO_APPS, DJANGO_MIDDLEWARE, broker_url="amqp://h/%2F", log_dir="/tmp/logs")
    assert given["INSTALLED_APPS"] == [app for app in project.INSTALLED_APPS if app != "web.shop"]
    # this project also serves its static files with WhiteNoise (a deployment choice, not ours to make)
    assert given["MIDDLEWARE"] == [m for m in project.MIDDLEWARE if not m.startswith("whitenoise.")]
    assert given["DRAMATIQ_BROKER"] == {**project.DRAMATIQ_BROKER, "OPTIONS": {"url": "amqp://h/%2F"}}
    assert given["DRAMATIQ_AUTODISCOVER_MODULES"] == project.DRAMATIQ_AUTODISCOVER_MODULES
    assert given["LOGGING_CONFIG"] == project.LOGGING_CONFIG
    assert given["LOGGING"]["log_dir"] == given["PIPELINE_LOG_DIR"] == "/tmp/logs"


@pytest.mark.store_independent
def test_the_settings_helper_names_the_django_apps_a_project_lacks():
    with pytest.raises(ImproperlyConfigured, match="django.contrib.admin, django.contrib.messages"):
        pipeline_settings([a for a in DJANGO_APPS if a not in ("django.contrib.admin", "django.contrib.messages")],
                          DJANGO_MIDDLEWARE)


@pytest.mark.store_independent
def test_the_settings_helper_keeps_what_a_project_already_has_once():
    first = pipeline_settings(DJANGO_APPS, DJANGO_MIDDLEWARE)
    again = pipeline_settings(first["INSTALLED_APPS"], first["MIDDLEWARE"])
    assert again["INSTALLED_APPS"] == first["INSTALLED_APPS"] and again["MIDDLEWARE"] == first["MIDDLEWARE"]


# --- web.routes under a prefix of the project's choice ---------------------------------------

@pytest.mark.urls("tests.prefixed_urls")
def test_the_openapi_document_under_a_prefix_says_where_the_api_is(client):
    document = client.get(f"/{PREFIX}api/openapi.json").json()
    assert document["servers"] == [{"url": f"http://testserver/{PREFIX}".rstrip("/")}]
    assert "/api/runs/{run_id}" in document["paths"]  # server URL + path = /ops/pipelines/api/runs/{run_id}


@pytest.mark.urls("tests.prefixed_urls")
def test_errors_under_the_prefixed_api_are_json(client, api_token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token}"}
    missing = client.get(f"/{PREFIX}api/no-such-endpoint", **auth)
    assert missing.status_code == 404 and missing.json()["error"].startswith("no such endpoint")
    not_allowed = client.delete(f"/{PREFIX}api/openapi.json")
    assert not_allowed.status_code == 405 and "error" in not_allowed.json()
    # outside the API's prefix Django's own pages stay as they are
    assert client.get("/elsewhere/missing")["Content-Type"].startswith("text/html")


@pytest.mark.urls("tests.prefixed_urls")
def test_the_prefixed_api_answers(client, api_token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token}"}
    runs = client.get(f"/{PREFIX}api/runs", **auth)
    assert runs.status_code == 200 and "runs" in runs.json()
    assert client.get(f"/{PREFIX}healthz").status_code == 200


@pytest.mark.urls("tests.prefixed_urls")
@override_settings(STATIC_URL="/assets/")
def test_the_prefixed_dashboard_links_within_its_prefix_and_to_its_static_files(admin_client):
    page = admin_client.get(f"/{PREFIX}dashboard/runs/")
    assert page.status_code == 200
    html = page.content.decode()
    for name in ("runs/", "events/", "failed/", "schedules/", "workers/"):
        assert f'href="/{PREFIX}dashboard/{name}' in html, name
    assert 'href="/dashboard/' not in html
    assert 'href="/assets/dashboard/dashboard.css"' in html and 'src="/assets/dashboard/dashboard.js"' in html
    assert 'href="/admin/"' in html  # the admin link is reversed too
    login = admin_client.logout() or admin_client.get(f"/{PREFIX}dashboard/")
    assert login.status_code == 302 and login["Location"].startswith("/admin/login/")
