"""Webhooks: completion events POSTed to a subscriber's URL (here a receiver on 127.0.0.1 only),
signed with HMAC-SHA256 over timestamp + body, delivered by the `deliver_webhook` pipeline with
retries and backoff, the subscription disabled after a run of failures; bad subscriptions refused."""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.models import Run
from tests.conftest import read_log_lines, wait_for

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec-0123456789abcdef"


class Receiver:
    """A tiny HTTP server on 127.0.0.1 (port 0): answers each POST with the next status in
    `statuses` (the last one repeats) and records what it received."""

    def __init__(self, statuses=(200,), redirect_to: str | None = None, delay: float = 0) -> None:
        self.statuses = list(statuses)
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append({"at": time.monotonic(), "path": self.path, "headers": dict(self.headers),
                                          "body": body})
                time.sleep(delay)
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", redirect_to or "/final")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        # (shutdown() waits for the server's next poll: 0.05 s, not the default 0.5 s, per test)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made = []

    def make(*args, **kwargs) -> Receiver:
        made.append(Receiver(*args, **kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def subscribe(client, token: str, **fields):
    body = {"name": "ops", "url": "http://127.0.0.1:9/hook", "secret": SECRET, **fields}
    return client.post("/api/webhooks", data=json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {token}")


def wait_for_worker_caches() -> None:
    """Workers cache the active subscriptions for a few seconds: let a new one reach them."""
    from web.webhooks import fanout

    time.sleep(fanout.CACHE_SECONDS + 0.5)


def run_three_stages(value: int = 1) -> str:
    from pipeline import emit
    from pipeline.models import Run

    event_id = emit("test.started", {"value": value})
    run = wait_for(lambda: Run.objects.filter(event_id=event_id, status="succeeded").first(), 30, "the run")
    return str(run.id)


def readme_verify_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Live updates and webhooks", 1)[1]
    return re.search(r"```python\n(def verify\(.*?)```", section, re.S).group(1)


# --- delivery over the broker ---------------------------------------------------------------


def test_a_completion_is_delivered_once_with_a_valid_signature_and_recorded_as_a_run(
    pipelines, client, api_token, receiver_factory
):
    from web.webhooks import fanout
    from web.webhooks.signing import verify

    receiver = receiver_factory()
    assert subscribe(client, api_token, url=receiver.url, event_types=["run.succeeded"],
                     pipelines=["three_stages"]).status_code == 201
    fanout.forget_cache()
    run = pipelines.run_of(pipelines.emit("test.started", {"value": 1})).assert_succeeded()
    (delivery,) = pipelines.runs("deliver_webhook")
    delivery.assert_succeeded()
    assert len(receiver.received) == 1  # once per completion
    request = receiver.received[0]
    headers, body = request["headers"], request["body"]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Pipeline-Event"] == "run.succeeded"
    assert headers["X-Pipeline-Signature"].startswith("v1=")
    assert verify(SECRET, body, headers["X-Pipeline-Timestamp"], headers["X-Pipeline-Signature"])
    assert not verify("another-secret-of-16+", body, headers["X-Pipeline-Timestamp"], headers["X-Pipeline-Signature"])
    event = json.loads(body)
    assert event["type"] == "run.succeeded"
    assert event["data"]["run_id"] == run.id and event["data"]["pipeline"] == "three_stages"
    (stage,) = delivery.stages.values()
    assert stage.result["status_code"] == 200
    # The secret never reaches the logs, the delivery's event or its run.
    assert all(SECRET not in json.dumps(line, default=str) for line in pipelines.logs())
    assert SECRET not in json.dumps(Run.objects.select_related("event").get(id=delivery.id).event.payload)


@pytest.mark.broker
def test_a_receiver_answering_500_is_retried_with_backoff_until_it_accepts(
    live_worker, client, api_token, receiver_factory
):
    from pipeline.models import Run, StageRun
    from web.webhooks.models import WebhookSubscription

    receiver = receiver_factory(statuses=[500, 500, 200])
    assert subscribe(client, api_token, url=receiver.url, pipelines=["three_stages"]).status_code == 201
    wait_for_worker_caches()
    run_three_stages()
    stage = wait_for(lambda: StageRun.objects.filter(run__pipeline="deliver_webhook", status="succeeded").first(),
                     20, "the delivery to succeed on its third attempt")
    assert stage.attempts == 3
    # The run (and so the API) records a generic sentence; the status is in the worker's log line.
    assert [entry["error"] for entry in stage.attempt_log] == ["DeliveryFailed: delivery failed"] * 2
    failed_lines = [line for line in read_log_lines() if line.get("event") == "webhook.delivery_failed"
                    and line.get("run_id") == str(stage.run_id)]
    assert [line["reason"] for line in failed_lines] == ["answered 500"] * 2
    assert {line["target"] for line in failed_lines} == {receiver.url.rsplit("/", 1)[0]}  # no path
    times = [r["at"] for r in receiver.received]
    assert len(times) == 3
    # Exponential backoff from 1 s, with jitter: 0.5-1 s, then 1-2 s.
    assert times[1] - times[0] >= 0.45 and times[2] - times[1] >= 0.95, times
    assert Run.objects.get(id=stage.run_id).status == "succeeded"
    assert WebhookSubscription.objects.get().consecutive_failures == 0
    assert len({r["body"] for r in receiver.received}) == 1  # the same body every attempt


def test_a_subscription_is_disabled_after_its_run_of_failed_deliveries(pipelines, client, api_token, receiver_factory):
    from web.webhooks import fanout
    from web.webhooks.models import WebhookSubscription

    receiver = receiver_factory(statuses=[500])
    assert subscribe(client, api_token, url=receiver.url, pipelines=["three_stages"], max_attempts=1,
                     max_consecutive_failures=2).status_code == 201
    fanout.forget_cache()
    pipelines.emit("test.started", {"value": 1})
    assert WebhookSubscription.objects.get().consecutive_failures == 1
    assert WebhookSubscription.objects.get().active
    pipelines.emit("test.started", {"value": 2})
    sub = WebhookSubscription.objects.get()
    assert not sub.active and sub.consecutive_failures == 2 and sub.disabled_at is not None
    assert sub.disabled_reason == "2 deliveries in a row failed; last: delivery failed"
    assert [r.status for r in pipelines.runs("deliver_webhook")] == ["failed", "failed"]
    (disabled,) = pipelines.logs("webhook.disabled")
    assert disabled["subscription_id"] == sub.pk

    fanout.forget_cache()
    pipelines.emit("test.started", {"value": 3})
    assert len(receiver.received) == 2  # a disabled subscription gets nothing
    assert len(pipelines.runs("deliver_webhook")) == 2


# --- signing, redirects and input, without the broker ----------------------------------------


def test_the_readme_snippet_verifies_a_signature_and_rejects_a_tampered_body():
    import inspect

    from web.webhooks import signing

    snippet = readme_verify_snippet()
    assert snippet.strip() == inspect.getsource(signing.verify).strip()  # the README shows the shipped function
    namespace: dict = {}
    exec(snippet, namespace)
    verify = namespace["verify"]
    body = b'{"data": {"run_id": "r1", "status": "succeeded"}, "type": "run.succeeded"}'
    headers = signing.headers(SECRET, body)
    timestamp, signature = headers["X-Pipeline-Timestamp"], headers["X-Pipeline-Signature"]
    assert verify(SECRET, body, timestamp, signature)
    assert not verify(SECRET, body.replace(b"succeeded", b"failed", 1), timestamp, signature)  # tampered body
    assert not verify(SECRET, body, str(int(timestamp) + 1), signature)  # tampered timestamp
    assert not verify(SECRET, body, str(int(timestamp) - 3600), signing.sign(SECRET, str(int(timestamp) - 3600), body))


def test_each_attempt_signs_its_own_timestamp_as_the_readme_says():
    from web.webhooks import signing

    body = b'{"type": "run.failed"}'
    first, retry = signing.headers(SECRET, body, now=1764146400), signing.headers(SECRET, body, now=1764146401)
    assert first["X-Pipeline-Timestamp"] != retry["X-Pipeline-Timestamp"]
    assert first["X-Pipeline-Signature"] != retry["X-Pipeline-Signature"]  # same body, another timestamp
    readme = " ".join((ROOT / "README.md").read_text().split())
    sentence = readme[readme.index("Every attempt carries these headers"):readme.index("X-Pipeline-Event: run.failed")]
    assert "the signature changes with it" in sentence and "signature are the same" not in sentence


def test_redirects_are_followed_only_to_the_same_host(receiver_factory):
    from web.webhooks.pipelines import DeliveryFailed, post

    same = receiver_factory(statuses=[307, 200])
    response = post(same.url, SECRET, "{}", "run.succeeded", "d1")
    assert response.status_code == 200 and [r["path"] for r in same.received] == ["/hook", "/final"]

    target = receiver_factory(statuses=[200])
    elsewhere = receiver_factory(statuses=[302], redirect_to=target.url.replace("127.0.0.1", "localhost"))
    with pytest.raises(DeliveryFailed) as refused:
        post(elsewhere.url, SECRET, "{}", "run.succeeded", "d2")
    assert str(refused.value) == "delivery failed"
    assert refused.value.detail.startswith("redirect to another origin refused")
    assert target.received == []


def test_a_receiver_that_does_not_answer_in_time_fails_the_attempt(receiver_factory, monkeypatch):
    from web.webhooks import pipelines

    monkeypatch.setattr(pipelines, "TIMEOUT", (1, 0.3))  # (3, 10) in production
    slow = receiver_factory(statuses=[200], delay=1.5)
    with pytest.raises(pipelines.DeliveryFailed) as failed:
        pipelines.post(slow.url, SECRET, "{}", "run.succeeded", "d3")
    assert "ReadTimeout" in failed.value.detail and str(failed.value) == "delivery failed"


@pytest.mark.parametrize("fields, field, message", [
    ({"url": "ftp://127.0.0.1/hook"}, "url", "url must be an http:// or https:// URL"),
    ({"url": "file:///etc/passwd"}, "url", "url must be an http:// or https:// URL"),
    ({"url": "javascript:alert(1)"}, "url", "url must be an http:// or https:// URL"),
    ({"url": "http:///nohost"}, "url", "has no host"),
    ({"secret": "short"}, "secret", "secret must be a string of at least 16 characters"),
    ({"secret": 1234567890123456789}, "secret", "secret must be a string of at least 16 characters"),
    ({"event_types": ["run.started"]}, "event_types", "event_types must be a non-empty list"),
    ({"pipelines": ["no_such_pipeline"]}, "pipelines", "unknown pipeline"),
])
def test_a_bad_subscription_is_rejected_with_400_naming_the_field(client, api_token, fields, field, message):
    from web.webhooks.models import WebhookSubscription

    response = subscribe(client, api_token, **fields)
    assert response.status_code == 400
    assert response.json()["field"] == field and message in response.json()["error"]
    assert not WebhookSubscription.objects.exists()


def test_subscriptions_are_listed_without_their_secret_and_deleted(client, api_token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token}"}
    assert client.get("/api/webhooks").status_code == 401
    created = subscribe(client, api_token, url="https://hooks.example.com/in")
    assert created.status_code == 201 and "secret" not in created.json()
    assert created.json()["event_types"] == ["run.succeeded", "run.failed", "run.cancelled"]
    assert subscribe(client, api_token).status_code == 409  # the same name
    listed = client.get("/api/webhooks", **auth).json()["webhooks"]
    assert [w["name"] for w in listed] == ["ops"] and SECRET not in json.dumps(listed)
    webhook_id = created.json()["id"]
    assert client.delete(f"/api/webhooks/{webhook_id}", **auth).status_code == 204
    assert client.delete(f"/api/webhooks/{webhook_id}", **auth).status_code == 404


def test_the_admin_lists_subscriptions_and_refuses_a_short_secret(admin_client):
    from web.webhooks.models import WebhookSubscription

    WebhookSubscription.objects.create(name="ops", url="https://hooks.example.com/in", secret=SECRET)
    listing = admin_client.get("/admin/webhooks/webhooksubscription/")
    assert listing.status_code == 200 and b"hooks.example.com" in listing.content
    refused = admin_client.post("/admin/webhooks/webhooksubscription/add/", {
        "name": "bad", "url": "ftp://example.com/x", "secret": "short", "event_types": '["run.failed"]',
        "pipelines": "[]", "active": "on", "max_consecutive_failures": "5", "max_attempts": "6",
        "consecutive_failures": "0", "disabled_reason": ""})
    assert refused.status_code == 200  # the form again, with its errors
    assert b"url must be an http:// or https:// URL" in refused.content
    assert b"at least 16 characters" in refused.content
    assert not WebhookSubscription.objects.filter(name="bad").exists()
