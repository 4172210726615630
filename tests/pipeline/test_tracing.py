"""W3C Trace Context (level 1): the `traceparent` header is read exactly as the specification's
processing model says, the flags come back as received, and `tracestate` travels unchanged, in the
parser and through a live request (POST /api/events) into the run."""
import json

import pytest

from pipeline.models import Event
from pipeline._tracing import parse_trace_context, parse_traceparent, traceparent

TID = "0af7651916cd43dd8448eb211c80319c"
PID = "b7ad6b7169203331"

# (header, expected (trace id, parent id, flags, version) or None for "invalid: start a new trace")
CASES = [
    # valid, version 00
    (f"00-{TID}-{PID}-01", (TID, PID, "01", "00")),
    (f"00-{TID}-{PID}-00", (TID, PID, "00", "00")),  # not sampled: carried, not turned into 01
    (f"00-{TID}-{PID}-03", (TID, PID, "03", "00")),  # flags other than sampled: carried as received
    (f"00-{TID}-{PID}-ff", (TID, PID, "ff", "00")),
    (f" 00-{TID}-{PID}-01\t", (TID, PID, "01", "00")),  # optional white space around a header value
    # valid, a future version: read by its first four fields, later fields ignored
    (f"01-{TID}-{PID}-01", (TID, PID, "01", "01")),
    (f"01-{TID}-{PID}-01-what-ever", (TID, PID, "01", "01")),
    (f"cc-{TID}-{PID}-09-", (TID, PID, "09", "cc")),
    (f"fe-{TID}-{PID}-00-{'a' * 100}", (TID, PID, "00", "fe")),
    # invalid
    (f"ff-{TID}-{PID}-01", None),  # version ff is forbidden
    (f"00-{TID}-{PID}-01-what-ever", None),  # version 00 has exactly four fields
    (f"01-{TID}-{PID}-01what-ever", None),  # after the flags: end or "-"
    (f"0A-{TID}-{PID}-01", None),  # uppercase version
    (f"AA-{TID}-{PID}-01", None),
    (f"00-{TID.upper()}-{PID}-01", None),  # uppercase trace id
    (f"00-{TID}-{PID.upper()}-01", None),  # uppercase parent id
    (f"00-{TID}-{PID}-0B", None),  # uppercase flags
    (f"00-{'0' * 32}-{PID}-01", None),  # all-zero trace id
    (f"00-{TID}-{'0' * 16}-01", None),  # all-zero parent id
    (f"01-{'0' * 32}-{PID}-01-x", None),  # ... in a future version too
    (f"00-{TID[:-1]}-{PID}-01", None),  # trace id too short
    (f"00-{TID}a-{PID}-01", None),  # too long
    (f"00-{TID}-{PID[:-1]}-01", None),  # parent id too short
    (f"00-{TID}-{PID}-1", None),  # flags too short
    (f"00-{TID}-{PID}", None),  # no flags
    (f"00-{TID[:-1]}g-{PID}-01", None),  # not hex
    (f"0g-{TID}-{PID}-01", None),
    (f"000-{TID}-{PID}-01", None),  # version of three digits
    (f"00_{TID}_{PID}_01", None),  # wrong delimiter
    (f"00-{TID}-{PID}-01,00-{TID}-{PID}-01", None),  # two headers folded into one
    (f"x00-{TID}-{PID}-01", None),
    ("", None),
]


@pytest.mark.parametrize("header, expected", CASES)
def test_traceparent_is_parsed_as_w3c_trace_context_says(header, expected):
    context = parse_trace_context(header, "congo=t61rcWkgMzE")
    if expected is None:
        assert context is None and parse_traceparent(header) is None
    else:
        assert (context.trace_id, context.parent_id, context.flags, context.version) == expected
        assert context.tracestate == "congo=t61rcWkgMzE"
        assert parse_traceparent(header) == TID


def test_the_table_holds_at_least_20_cases_of_each_kind():
    assert len(CASES) >= 20
    assert sum(e is None for _, e in CASES) >= 20 and sum(e is not None for _, e in CASES) >= 8


def test_we_speak_version_00_with_the_flags_we_were_given():
    assert traceparent(TID, PID, "03") == f"00-{TID}-{PID}-03"
    assert traceparent(TID, PID) == f"00-{TID}-{PID}-01"  # a trace that starts here is sampled


@pytest.mark.django_db
@pytest.mark.parametrize("header, expected", CASES)
def test_a_request_keeps_a_valid_trace_context_and_replaces_an_invalid_one(client, api_token, header, expected):
    tracestate = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    response = client.post(
        "/api/events", data=json.dumps({"type": "test.started", "payload": {}}), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_token}", HTTP_TRACEPARENT=header, HTTP_TRACESTATE=tracestate,
    )
    assert response.status_code == 202, response.content
    event = Event.objects.get(id=response.json()["event_id"])
    version, trace_id, span_id, flags = response["traceparent"].split("-")
    assert version == "00" and span_id not in (PID, "0" * 16) and len(span_id) == 16
    assert trace_id == event.trace_id == response.json()["trace_id"] == response["X-Trace-Id"]
    if expected is None:  # a new trace, sampled, and the caller's tracestate dropped with its traceparent
        assert trace_id != TID and flags == event.trace_flags == "01"
        assert "tracestate" not in response and event.tracestate == ""
    else:
        assert trace_id == TID and flags == event.trace_flags == expected[2]
        assert response["tracestate"] == event.tracestate == tracestate


@pytest.mark.django_db
def test_without_tracestate_none_is_sent_or_stored(client, api_token):
    response = client.post(
        "/api/events", data=json.dumps({"type": "test.started", "payload": {}}), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_token}", HTTP_TRACEPARENT=f"00-{TID}-{PID}-00",
    )
    event = Event.objects.get(id=response.json()["event_id"])
    assert "tracestate" not in response and event.tracestate == "" and event.trace_flags == "00"


@pytest.mark.broker
def test_every_case_through_the_live_server(live_server, api_token):
    """The same table over real HTTP (http.client sends header values as given, white space too)."""
    import http.client
    from urllib.parse import urlsplit

    from tests.conftest import STAGE_QUEUE, purge_queues

    address = urlsplit(live_server.url)
    wrong = []
    try:
        for header, expected in CASES:
            connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
            connection.request("POST", "/api/events", body=json.dumps({"type": "test.traced", "payload": {}}),
                               headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_token}",
                                        "traceparent": header, "tracestate": "k=v"})
            response = connection.getresponse()
            body = json.loads(response.read())
            connection.close()
            event = Event.objects.get(id=body["event_id"])
            _, trace_id, _, flags = response.getheader("traceparent").split("-")
            kept = (trace_id, flags, response.getheader("tracestate"), event.trace_flags, event.tracestate)
            want = (TID, expected[2], "k=v", expected[2], "k=v") if expected else (event.trace_id, "01", None, "01", "")
            if response.status != 202 or kept != want or (expected is None and trace_id == TID):
                wrong.append(f"{header!r}: {response.status} {kept}")
    finally:
        purge_queues(STAGE_QUEUE)
    assert not wrong, wrong


def test_a_stage_continues_the_trace_with_the_flags_and_tracestate_it_came_with(pipelines, client, api_token):
    response = client.post(
        "/api/events", data=json.dumps({"type": "test.traced", "payload": {}}), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_token}", HTTP_TRACEPARENT=f"01-{TID}-{PID}-02-future",
        HTTP_TRACESTATE="vendor=opaque-value",
    )
    assert response.status_code == 202
    assert response.headers["traceparent"].startswith(f"00-{TID}-") and response.headers["traceparent"].endswith("-02")
    assert response.headers["tracestate"] == "vendor=opaque-value"
    run = pipelines.run_of(response.json()["event_id"]).assert_succeeded()
    sent = run.result("call_out")
    version, trace_id, span_id, flags = sent["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TID, "02") and span_id != PID
    assert sent["tracestate"] == "vendor=opaque-value"
