"""API tokens expire, and are read-only (GET) or read-write: a token leaked from a dashboard
script cannot emit events, replay runs or subscribe webhooks, and no token works forever."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from web.api.models import ApiToken

pytestmark = pytest.mark.django_db


def call(client, method, url, token, body=None):
    kwargs = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return getattr(client, method)(url, **kwargs)


def test_a_new_token_expires_after_the_configured_number_of_days(settings):
    settings.PIPELINE_API_TOKEN_DAYS = 30
    token, _ = ApiToken.issue("ci")
    assert token.scope == "write"
    assert abs(token.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)


def test_an_expired_token_is_refused_with_401_saying_so(client):
    token, value = ApiToken.issue("old", expires_at=timezone.now() + timedelta(days=1))
    assert call(client, "get", "/api/runs", value).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = call(client, "get", "/api/runs", value)
    assert response.status_code == 401
    assert response.json()["error"].startswith("API token 'old' expired at ")
    assert ApiToken.authenticate(value) is None


def test_a_token_without_an_expiry_date_keeps_working(client):
    token, value = ApiToken.issue("forever")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=None)
    assert call(client, "get", "/api/runs", value).status_code == 200


@pytest.mark.parametrize("method, url, body", [
    ("post", "/api/events", {"type": "test.started", "payload": {}}),
    ("post", "/api/webhooks", {"name": "x", "url": "https://hooks.example.com/in", "secret": "0123456789abcdef"}),
    ("delete", "/api/webhooks/1", None),
    ("post", "/api/schedules", {"name": "n", "pipeline": "ticks", "interval_seconds": 60}),
    ("post", "/api/runs/00000000-0000-0000-0000-000000000000/replay", None),
    ("post", "/api/runs/00000000-0000-0000-0000-000000000000/cancel", None),
])
def test_a_read_only_token_may_not_change_anything(client, method, url, body):
    from pipeline.models import Event
    from web.webhooks.models import WebhookSubscription

    _, value = ApiToken.issue("dashboard-script", scope="read")
    response = call(client, method, url, value, body)
    assert response.status_code == 403, response.content
    assert response.json() == {
        "error": f"API token 'dashboard-script' is read-only: {method.upper()} needs a read-write token",
        "field": "scope"}
    assert not Event.objects.exists() and not WebhookSubscription.objects.exists()


def test_a_read_only_token_reads_and_a_read_write_token_writes(client):
    _, reader = ApiToken.issue("reader", scope="read")
    _, writer = ApiToken.issue("writer", scope="write")
    assert call(client, "get", "/api/runs", reader).status_code == 200
    assert call(client, "get", "/api/webhooks", reader).status_code == 200
    assert call(client, "get", "/api/schedules", reader).status_code == 200
    posted = call(client, "post", "/api/events", writer, {"type": "test.started", "payload": {}})
    assert posted.status_code == 202
    assert call(client, "get", f"/api/events/{posted.json()['event_id']}", reader).status_code == 200


def test_an_unknown_scope_is_refused():
    with pytest.raises(ValueError, match="scope must be one of read, write"):
        ApiToken.issue("x", scope="admin")


def test_the_admin_issues_a_token_with_its_scope_and_shows_it_once(admin_client):
    response = admin_client.post("/admin/api/apitoken/add/", {
        "name": "grafana", "scope": "read", "active": "on", "expires_at_0": "", "expires_at_1": ""}, follow=True)
    assert response.status_code == 200
    token = ApiToken.objects.get(name="grafana")
    assert token.scope == "read" and token.expires_at > timezone.now() + timedelta(days=89)
    shown = [str(m) for m in response.context["messages"] if "shown once" in str(m)]
    assert len(shown) == 1
    value = shown[0].rsplit(" ", 1)[1]
    assert ApiToken.authenticate(value) == token
