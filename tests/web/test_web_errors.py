"""The engine's errors become HTTP statuses in one table (`web.errors`), the same on every endpoint."""
import json

import pytest

import pipeline
from web.errors import error_response, status_for


@pytest.mark.parametrize(("error", "status"), [
    (pipeline.UnknownEventType("nope", ["order.placed"]), 400),
    (pipeline.InvalidPayload("order.placed", [{"field": "total", "message": "required"}]), 400),
    (pipeline.ReservedName("type", "run.x", "run."), 400),
    (pipeline.PayloadTooLarge(300_000, 262_144), 413),
    (pipeline.RunNotFound("no run with id 'x'"), 404),
    (pipeline.OperationRefused("run x has already finished"), 409),
    (pipeline.BrokerUnavailable("cannot reach RabbitMQ"), 503),
    (pipeline.PipelineError("something else"), 500),
])
def test_each_engine_error_has_one_http_status(error, status):
    assert status_for(error) == status


def test_an_event_error_keeps_the_fields_it_names_in_the_body():
    response = error_response(pipeline.InvalidPayload("order.placed", [{"field": "total", "message": "required"}]))
    body = json.loads(response.content)
    assert response.status_code == 400
    assert body["fields"] == [{"field": "total", "message": "required"}]
    assert body["type"] == "order.placed"


def test_an_operation_error_is_its_message():
    response = error_response(pipeline.OperationRefused("run x has already finished"))
    assert (response.status_code, json.loads(response.content)) == (409, {"error": "run x has already finished"})


def test_event_errors_carry_no_status_of_their_own():
    assert not hasattr(pipeline.EventError("x"), "status_code")
