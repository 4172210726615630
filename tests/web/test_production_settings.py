"""Production settings (`DJANGO_ENV=production`): Django's deployment check finds nothing, the
secret key must come from the environment, and behind a TLS proxy the dashboard's forms work,
cookies are HTTPS-only, HSTS is sent and probes over plain HTTP still answer. The shipped
deployment files carry no example key."""
from __future__ import annotations

import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, child_env

KEY = secrets.token_urlsafe(50)


def run_with(env: dict[str, str], *args: str, database_url: str = "sqlite:///:memory:") -> subprocess.CompletedProcess:
    environment = child_env(database_url, DJANGO_SETTINGS_MODULE="web.settings", **env)
    for name in ("DJANGO_SECRET_KEY", "DJANGO_DEBUG", "PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS"):
        if name not in env:
            environment.pop(name, None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=environment)


@pytest.mark.broker  # a real process (the slow tier)
@pytest.mark.store_independent  # `manage.py check` on SQLite in memory, whatever the pass
def test_the_deployment_check_finds_nothing_with_production_settings():
    result = run_with({"DJANGO_ENV": "production", "DJANGO_SECRET_KEY": KEY}, "manage.py", "check", "--deploy")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr and "security." not in result.stdout + result.stderr


@pytest.mark.broker  # a real process (the slow tier)
@pytest.mark.store_independent  # `manage.py check` on SQLite in memory, whatever the pass
@pytest.mark.parametrize("env, message", [
    ({}, "DJANGO_SECRET_KEY is required with DJANGO_ENV=production"),
    ({"DJANGO_SECRET_KEY": "change-me-to-a-long-random-string"}, "DJANGO_SECRET_KEY is a placeholder or too weak"),
    ({"DJANGO_SECRET_KEY": "short"}, "DJANGO_SECRET_KEY is a placeholder or too weak"),
    ({"DJANGO_SECRET_KEY": KEY, "DJANGO_DEBUG": "1"}, "DJANGO_DEBUG=1 with DJANGO_ENV=production"),
    ({"DJANGO_SECRET_KEY": KEY, "PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS": "1"}, "is for development"),
    ({"DJANGO_SECRET_KEY": KEY, "DJANGO_SECURE_HSTS_SECONDS": "a year"}, "DJANGO_SECURE_HSTS_SECONDS='a year'"),
])
def test_production_refuses_to_start_without_a_real_key_or_with_development_switches(env, message):
    result = run_with({"DJANGO_ENV": "production", **env}, "manage.py", "check")
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.broker  # a real process (the slow tier)
@pytest.mark.store_independent  # `manage.py check` on SQLite in memory, whatever the pass
def test_an_unknown_environment_name_is_refused():
    result = run_with({"DJANGO_ENV": "staging"}, "manage.py", "check")
    assert result.returncode != 0 and "DJANGO_ENV='staging': use development or production" in result.stderr


@pytest.mark.broker  # a real process (the slow tier)
def test_behind_a_tls_proxy_forms_post_cookies_are_secure_and_probes_answer_over_http(test_database_url, db):
    """Run in a child process, as production imports its settings: the admin's login form is
    fetched and posted through the proxy (X-Forwarded-Proto: https) without a CSRF 403."""
    script = textwrap.dedent("""
        import django, json
        django.setup()
        from django.test import Client
        c = Client(HTTP_X_FORWARDED_PROTO="https", HTTP_HOST="pipelines.example.com")
        page = c.get("/admin/login/")
        token = page.cookies["csrftoken"]
        posted = c.post("/admin/login/", {"username": "nobody", "password": "wrong", "csrfmiddlewaretoken": token.value},
                        HTTP_ORIGIN="https://pipelines.example.com", HTTP_REFERER="https://pipelines.example.com/admin/login/")
        plain = Client(HTTP_HOST="pipelines.example.com")
        print(json.dumps({
            "login_page": page.status_code, "login_post": posted.status_code,
            "csrf_cookie_secure": bool(token["secure"]), "hsts": page.get("Strict-Transport-Security"),
            "http_page": plain.get("/admin/login/").status_code,
            "http_redirect": plain.get("/admin/login/").get("Location"),
            "healthz_over_http": plain.get("/healthz").status_code,
        }))
    """)
    result = run_with({"DJANGO_ENV": "production", "DJANGO_SECRET_KEY": KEY,
                       "DJANGO_ALLOWED_HOSTS": "pipelines.example.com"},
                      "-c", script, database_url=test_database_url)
    assert result.returncode == 0, result.stderr
    import json

    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["login_page"] == 200
    assert seen["login_post"] == 200  # the form again, "wrong password"; not 403 (CSRF)
    assert seen["csrf_cookie_secure"] is True
    assert seen["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert seen["http_page"] == 301 and seen["http_redirect"] == "https://pipelines.example.com/admin/login/"
    assert seen["healthz_over_http"] == 200


def test_passwords_are_validated(db):
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    for weak in ("password", "12345678901234", "short"):
        with pytest.raises(ValidationError):
            validate_password(weak)
    validate_password("correct horse battery staple 42")


def test_no_deployment_file_carries_an_example_secret_key():
    infra = ROOT / "infra"
    compose = yaml.safe_load((infra / "compose.yaml").read_text())
    env = compose["x-app"]["environment"]
    assert env["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")  # required from the environment
    assert env["DJANGO_ENV"] == "${DJANGO_ENV:-production}"
    secret = next(d for d in yaml.safe_load_all((infra / "k8s" / "secret.example.yaml").read_text()))
    assert secret["stringData"]["DJANGO_SECRET_KEY"] == ""
    config = yaml.safe_load((infra / "k8s" / "config.yaml").read_text())
    assert config["data"]["DJANGO_ENV"] == "production"
    assert "DJANGO_ENV=production" in (infra / "Dockerfile").read_text()
    for unit in Path(infra / "systemd").glob("*.service"):
        assert "Environment=DJANGO_ENV=production" in unit.read_text(), unit.name
    for path in [*infra.rglob("*.yaml"), infra / "Dockerfile"]:
        assert "change-me-to-a-long-random-string" not in path.read_text(), path
