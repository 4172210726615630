"""Redaction, as a table: what must be masked and what must be left alone, for keys, free text and
nested values; then the places it guards — log lines (tracebacks and exception objects included,
at any depth, third-party lines too) and the payloads the API returns."""
import json
import logging
import uuid
from dataclasses import dataclass

import pytest
import structlog
from django.utils import timezone

from pipeline import logging as pipeline_logging
from pipeline._redaction import CIRCULAR, MASK, MAX_DEPTH, TOO_DEEP, Redactor, redact, redact_text

SECRET = "s3cr3t-VALUE-9f8e7d"

# --- keys: a value under these is masked whole -------------------------------------------------------
SECRET_KEYS = [
    "password", "PASSWORD", "db_password", "PGPASSWORD", "passwd", "pwd", "db_pass", "passphrase",
    "secret", "client_secret", "SECRET_KEY", "token", "access_token", "refreshToken", "csrfmiddlewaretoken",
    "X-CSRFToken", "authorization", "Authorization", "HTTP_AUTHORIZATION", "auth", "basic_auth",
    "api_key", "apiKey", "X-Api-Key", "APIKEY", "private_key", "privateKey", "credentials", "aws_credentials",
    "dsn", "SENTRY_DSN", "jwt", "id_jwt", "pin", "pinCode", "session", "session_id", "sessionid",
    "cookie", "Set-Cookie", "card_number", "cardNumber", "cvv", "cvc", "aws_secret_access_key", "otp",
    "password2",
]
# ... and these are not secrets (their value is kept, though still checked as text).
PLAIN_KEYS = [
    "bypass", "passage", "passenger", "compass", "tokenizer", "tokens_used", "token_count", "token_type",
    "author", "authored_by", "auth_url", "keynote", "monkey", "idempotency_key", "key", "pinned", "spinner",
    "shipping", "sessions_total", "session_count", "dsnless", "cardinality", "discard", "pipeline", "stage",
    "customer_email", "secretary_name", "possession", "passed", "AUTH_PASSWORD_VALIDATORS",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_a_value_under_a_secret_key_is_masked(key):
    assert redact({key: SECRET}) == {key: MASK}
    assert redact({"nested": [{key: {"deeper": SECRET}}]}) == {"nested": [{key: MASK}]}


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_a_value_under_a_key_that_only_contains_a_secret_word_is_kept(key):
    assert redact({key: "visible-value"}) == {key: "visible-value"}


# --- free text: (text, what it must become) ----------------------------------------------------------
MASKED_TEXT = [
    ("password=hunter2 token=abc123", f"password={MASK} token={MASK}"),
    ("ValueError: password=hunter2 token=abc123", f"ValueError: password={MASK} token={MASK}"),
    ("Authorization: Bearer abc.def-123", f"Authorization: Bearer {MASK}"),
    ("authorization=Basic dXNlcjpwYXNz", f"authorization=Basic {MASK}"),
    ("headers: {'Authorization': 'Bearer abc'}", f"headers: {{'Authorization': '{MASK}'}}"),
    ('{"password": "hunter2", "n": 1}', f'{{"password": "{MASK}", "n": 1}}'),
    ("{'api_key': 'k-123', 'n': 1}", f"{{'api_key': '{MASK}', 'n': 1}}"),
    ("X-Api-Key: k-123", f"X-Api-Key: {MASK}"),
    ("curl -H 'Bearer eyAbCdEf0123456789'", f"curl -H 'Bearer {MASK}'"),
    ("amqp://guest:secret@rabbit:5672/%2F", f"amqp://guest:{MASK}@rabbit:5672/%2F"),
    ("postgres://app:p%40ss@db.internal/pipeline", f"postgres://app:{MASK}@db.internal/pipeline"),
    ("cannot reach https://user:pw@example.com/x now", f"cannot reach https://user:{MASK}@example.com/x now"),
    ("GET /shop/orders?token=abc123&page=2 HTTP/1.1", f"GET /shop/orders?token={MASK}&page=2 HTTP/1.1"),
    ("Not Found: /x?password=hunter2", f"Not Found: /x?password={MASK}"),
    ("/cb?access_token=abc&state=ok", f"/cb?access_token={MASK}&state=ok"),
    ("connect(host='db', password='p w')", f"connect(host='db', password='{MASK}')"),
    ("private_key=-----BEGIN", f"private_key={MASK}"),
    ("dsn=https://k@sentry.io/1", f"dsn={MASK}"),
    ("session: 7f3a9b", f"session: {MASK}"),
    ("pin=1234", f"pin={MASK}"),
    ("jwt=eyJhbGciOi", f"jwt={MASK}"),
    ("auth: abc", f"auth: {MASK}"),
    ("credentials = abc", f"credentials = {MASK}"),
    ("card 4111 1111 1111 1111 declined", f"card {MASK} declined"),
    ("card 4111-1111-1111-1111", f"card {MASK}"),
    ("charged 5555555555554444", f"charged {MASK}"),
    ("amex 378282246310005", f"amex {MASK}"),
    ("amex 3782 822463 10005.", f"amex {MASK}."),
    ("visa,4111111111111111;", f"visa,{MASK};"),
    ("id eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl here", f"id {MASK} here"),
    ("key sk_live_4eC39HqLyjWDarjtT1zdp7dc", f"key {MASK}"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", MASK),
    ("pat github_pat_11ABCDEFG0123456789ABCDEF", f"pat {MASK}"),
    ("aws AKIAIOSFODNN7EXAMPLE", f"aws {MASK}"),
]
KEPT_TEXT = [
    "stage.succeeded",
    "run 3f2a9c1e-0b6d-4a8f-9e2d-7c1b5a4f3e21 failed",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736",
    "at 1764547200123 ms",  # a millisecond timestamp: 13 digits, but no card
    "epoch_ms=1764547200123",
    "1764547200123456",  # microseconds
    "order 4111111111111112",  # fails the Luhn check
    "trace 0af4111111111111111b7c3d9e8f0a1b",  # a card-like digit run inside a hex id
    "run 41111111-1111-4111-8111-111111111111",  # a UUID of digits: never a card
    "run 12345678-4111-1111-1111-111111111111",
    "amount 0.4111111111111111",
    "bypass=1 passage=2 tokenizer=bert",
    "token_count=3 token_type=Bearer",
    "the bearer of bad news",
    "Not Found: /shop/orders/12",
    "https://example.com/path?page=2",
    "ssh://git@github.com/org/repo.git",
    "vm:4833",
    "2026-11-30T22:50:23.859410Z",
    "idempotency_key=order-42",
    "password reset requested",
    "ValueError: invalid literal for int() with base 10: 'x'",
    "author: Ada, spinner: on",
]


@pytest.mark.parametrize(("text", "expected"), MASKED_TEXT)
def test_a_secret_inside_text_is_masked(text, expected):
    assert redact_text(text) == expected
    assert redact({"message": text}) == {"message": expected}


@pytest.mark.parametrize("text", KEPT_TEXT)
def test_text_without_a_secret_is_left_alone(text):
    assert redact_text(text) == text
    assert redact([text]) == [text]


def test_numbers_a_card_number_as_an_integer_but_not_a_timestamp():
    assert redact({"n": 4111111111111111, "at_ms": 1764547200123, "at_us": 1764547200123456, "count": 7}) == {
        "n": MASK, "at_ms": 1764547200123, "at_us": 1764547200123456, "count": 7}


# --- depth, cycles, odd objects ----------------------------------------------------------------------
def nested(depth: int, leaf: dict) -> dict:
    value = leaf
    for _ in range(depth - 1):
        value = {"next": value}
    return value


@pytest.mark.parametrize("depth", [1, 12, 13, 50, MAX_DEPTH - 1])
def test_a_secret_at_any_depth_is_masked_and_the_rest_kept(depth):
    out = json.dumps(redact(nested(depth, {"password": SECRET, "note": "kept"})))
    assert SECRET not in out and MASK in out and '"note": "kept"' in out


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
def test_what_lies_deeper_than_the_limit_is_replaced_whole_never_passed_through(depth):
    value = leaf = [SECRET]  # no secret-looking key: text alone would not catch it
    for _ in range(depth - 1):
        value = [value]
    out = redact({"deep": value})
    assert leaf[0] == SECRET  # the caller's value is not changed
    text = json.dumps(out)
    assert SECRET not in text and TOO_DEEP in text


def test_a_value_that_contains_itself_becomes_a_marker():
    loop: dict = {"password": SECRET, "note": "n"}
    loop["self"] = loop
    assert redact(loop) == {"password": MASK, "note": "n", "self": CIRCULAR}


@dataclass
class Login:
    user: str
    password: str


def test_objects_are_redacted_as_what_they_would_render_as():
    out = redact({"exc": ValueError("password=hunter2"), "login": Login("ada", SECRET),
                  "raw": b"token=abc", "id": uuid.UUID(int=5), "items": {"k"}})
    assert out["exc"] == f"password={MASK}" and out["login"] == {"user": "ada", "password": MASK}
    assert out["raw"] == f"b'token={MASK}'" and out["id"] == uuid.UUID(int=5) and out["items"] == ["k"]


def test_added_key_names_are_matched_as_whole_words():
    redactor = Redactor(["ssn", "tax_id"])
    assert redactor.redact({"ssn": "1", "customer_ssn": "2", "ssnake": "3", "tax_id": "4", "taxonomy_id": "5"}) == {
        "ssn": MASK, "customer_ssn": MASK, "ssnake": "3", "tax_id": MASK, "taxonomy_id": "5"}
    assert redactor.redact_text("ssn=123-45-6789") == f"ssn={MASK}"


# --- where it applies --------------------------------------------------------------------------------
@pytest.fixture
def written_lines():
    """The event dicts as they are about to be rendered (after every processor)."""
    lines: list[dict] = []
    pipeline_logging.line_observers.append(lines.append)
    yield lines
    pipeline_logging.line_observers.remove(lines.append)


def test_tracebacks_and_exception_objects_in_log_lines_are_masked(written_lines):
    log = structlog.get_logger("tests.redaction")
    try:
        raise ValueError("refused: password=hunter2 token=tok-CANARY Authorization: Bearer abc-CANARY")
    except ValueError as exc:
        log.exception("redaction.traceback")
        log.error("redaction.object", error=exc, cause=[exc])
        logging.getLogger("tests.redaction.stdlib").error("failed: %s", exc, exc_info=True)
    text = json.dumps(written_lines, default=str)
    assert len(written_lines) == 3
    for leaked in ("hunter2", "tok-CANARY", "abc-CANARY"):
        assert leaked not in text
    assert "Traceback" in written_lines[0]["exception"] and "Traceback" in written_lines[2]["exception"]
    assert written_lines[1]["error"] == f"refused: password={MASK} token={MASK} Authorization: Bearer {MASK}"


def test_log_lines_are_masked_at_any_depth_by_key_and_by_value(written_lines):
    structlog.get_logger("tests.redaction").info(
        "redaction.deep", payload=nested(40, {"password": SECRET}), broker="amqp://guest:secret-CANARY@mq:5672/",
        headers={"Authorization": "Bearer abc-CANARY"}, note="Authorization: Bearer note-CANARY",
        at_ms=1764547200123, tokenizer="bert", bypass=True)
    line = written_lines[0]
    text = json.dumps(line)
    assert SECRET not in text and "CANARY" not in text
    assert line["broker"] == f"amqp://guest:{MASK}@mq:5672/" and line["headers"] == {"Authorization": MASK}
    assert (line["at_ms"], line["tokenizer"], line["bypass"]) == (1764547200123, "bert", True)


@pytest.mark.django_db
def test_the_django_request_line_masks_a_token_in_the_query_string(client, written_lines):
    assert client.get("/shop/no-such-page?token=tok-CANARY&page=2").status_code == 404
    request_lines = [l for l in written_lines if l.get("logger") == "django.request"]
    assert request_lines and "tok-CANARY" not in json.dumps(request_lines, default=str)
    assert f"token={MASK}&page=2" in request_lines[0]["request"]  # Django's extra: the request's repr


@pytest.mark.django_db
def test_the_api_returns_stored_payloads_masked_at_any_depth(client, api_token):
    from pipeline.models import Event

    payload = {"customer": {"email": "ada@example.com"}, "tree": nested(13, {"password": SECRET, "n": 1}),
               "webhook": "https://user:pw-CANARY@hooks.example.com/x"}
    event = Event.objects.create(type="test.started", payload=payload, occurred_at=timezone.now(), trace_id="a" * 32)
    body = client.get(f"/api/events/{event.id}", HTTP_AUTHORIZATION=f"Bearer {api_token}").json()
    text = json.dumps(body)
    assert SECRET not in text and "pw-CANARY" not in text
    assert body["payload"]["customer"] == {"email": "ada@example.com"} and '"n": 1' in text
