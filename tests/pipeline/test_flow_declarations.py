"""Flow-control declarations (rate limits, debounce, batching, priority): mistakes are caught
when the pipeline is declared or when the registry is validated, with the exact mistake."""
import pytest
from pydantic import BaseModel

from pipeline import Batch, Debounce, DefinitionError, Pipeline, RateLimit
from pipeline._definitions import registry
from pipeline.flow._keys import check_key, key_of
from pipeline.flow._priority import route, urgent_queue

pytestmark = [pytest.mark.store_independent, pytest.mark.usefixtures("restore_registry")]  # tests/pipeline/conftest.py


class Customer(BaseModel):
    id: int


class Order(BaseModel):
    order_id: int
    customer: Customer


@pytest.mark.parametrize("make, message", [
    (lambda: RateLimit(0), "RateLimit limit (N) must be a whole number above 0"),
    (lambda: RateLimit(2.5), "RateLimit limit (N) must be a whole number above 0"),
    (lambda: RateLimit(1, per=0), "RateLimit per (seconds) must be a number above 0"),
    (lambda: RateLimit(1, burst=-1), "RateLimit burst must be a whole number >= 0"),
    (lambda: RateLimit(1, mode="queue"), "RateLimit mode must be one of"),
    (lambda: RateLimit(1, key=""), "key must be a dotted path"),
    (lambda: Debounce(0), "Debounce seconds must be a number above 0"),
    (lambda: Debounce(5, max_wait=2), "Debounce max_wait (2) must be >= seconds (5)"),
    (lambda: Batch(0, seconds=1), "Batch size (N) must be a whole number above 0"),
    (lambda: Batch(10, seconds=-1), "Batch seconds must be a number above 0"),
])
def test_a_rule_with_an_impossible_number_is_refused_when_made(make, message):
    with pytest.raises(DefinitionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_a_key_naming_no_field_of_the_schema_is_refused_naming_the_declaration():
    check_key("customer.id", Order, "here")
    with pytest.raises(DefinitionError, match=r"pipeline 'p' debounce: key 'customer_id': 'customer_id' "
                                              r"is not a field of Order"):
        check_key("customer_id", Order, "pipeline 'p' debounce")
    with pytest.raises(DefinitionError, match="key 'customer.name': 'name' is not a field of Customer"):
        check_key("customer.name", Order, "here")
    with pytest.raises(DefinitionError, match="must be a dotted path"):
        check_key("customer..id", Order, "here")


def test_a_key_is_the_value_at_its_path_as_text_a_global_key_is_a_star_and_an_absent_one_empty():
    payload = {"order_id": 7, "customer": {"id": 42}}
    assert key_of("customer.id", payload) == "42"
    assert key_of("order_id", payload) == "7"
    assert key_of(None, payload) == "*"
    assert key_of("customer.missing", payload) == ""


def test_registry_validation_checks_keys_against_the_event_schema(monkeypatch):
    from pipeline._schemas import schemas

    monkeypatch.setitem(schemas, "flowdecl.order", Order)
    p = Pipeline("flowdecl_keyed", on="flowdecl.order", debounce=Debounce(2, key="customer_id"))
    p.stage("only")(lambda ctx: None)
    with pytest.raises(DefinitionError, match="pipeline 'flowdecl_keyed' debounce: key 'customer_id'"):
        registry.validate()
    registry.pipelines.pop("flowdecl_keyed")
    q = Pipeline("flowdecl_stage_key", on="flowdecl.order")
    q.stage("call", rate_limit=RateLimit(5, key="customer.nme"))(lambda ctx: None)
    with pytest.raises(DefinitionError, match="stage 'call' rate_limit: key 'customer.nme': 'nme' is not a field"):
        registry.validate()


def test_a_rule_about_a_runs_start_needs_exactly_one_first_stage(monkeypatch):
    from pipeline._schemas import schemas

    monkeypatch.setitem(schemas, "flowdecl.order", Order)
    p = Pipeline("flowdecl_two_roots", on="flowdecl.order", batch=Batch(10, seconds=1))
    p.stage("a")(lambda ctx: None)
    p.stage("b", after=[])(lambda ctx: None)
    with pytest.raises(DefinitionError, match="needs exactly one first stage"):
        registry.validate()


def test_wrong_kinds_and_conflicting_rules_are_refused():
    with pytest.raises(DefinitionError, match=r"rate_limit= takes a RateLimit\(...\)"):
        Pipeline("flowdecl_bad_kind", rate_limit=10)
    with pytest.raises(DefinitionError, match="declare debounce or batch, not both"):
        Pipeline("flowdecl_both", debounce=Debounce(1), batch=Batch(2, seconds=1))
    with pytest.raises(DefinitionError, match="priority must be one of"):
        Pipeline("flowdecl_prio", priority="high")
    p = Pipeline("flowdecl_stage_kind")
    with pytest.raises(DefinitionError, match=r"stage 's': rate_limit= takes a RateLimit"):
        p.stage("s", rate_limit=(10, 1))(lambda ctx: None)


def test_only_stages_that_declare_flow_control_are_gated_and_never_continued_inline():
    plain = Pipeline("flowdecl_plain")
    plain.stage("a")(lambda ctx: None)
    plain.stage("b")(lambda ctx: None)
    assert not any(s.gated for s in plain.stages.values())  # the hot path: no gate at all
    limited = Pipeline("flowdecl_limited")
    limited.stage("a")(lambda ctx: None)
    limited.stage("b", rate_limit=RateLimit(3))(lambda ctx: None)
    assert [s.gated for s in limited.stages.values()] == [False, True]
    from pipeline._runtime import _inline_child

    assert _inline_child(limited.stages["a"], [limited.stages["b"]]) is None
    debounced = Pipeline("flowdecl_debounced", debounce=Debounce(1))
    debounced.stage("a")(lambda ctx: None)
    debounced.stage("b")(lambda ctx: None)
    assert [s.gated for s in debounced.stages.values()] == [True, False]


def test_an_urgent_message_goes_to_the_urgent_twin_of_its_queue_which_is_declared():
    p = Pipeline("flowdecl_urgent", queue="flowdecl_q", priority="urgent")
    p.stage("a")(lambda ctx: None)
    actor = p.stages["a"].actor
    assert urgent_queue("flowdecl_q") in actor.broker.get_declared_queues()
    message = actor.message("r")
    assert route(message, "urgent").queue_name == "flowdecl_q.urgent"
    assert route(message, "normal") is message
    assert route(message, None) is message


def test_a_worker_for_some_queues_consumes_their_urgent_twins_too():
    from pipeline.middleware import UrgentQueues

    class FakeWorker:
        consumer_whitelist = {"pipeline", "other"}

    worker = FakeWorker()
    UrgentQueues().before_worker_boot(None, worker)
    assert worker.consumer_whitelist == {"pipeline", "other", "pipeline.urgent", "other.urgent"}
    everything = FakeWorker()
    everything.consumer_whitelist = None  # no --queues: every declared queue, twins included
    UrgentQueues().before_worker_boot(None, everything)
    assert everything.consumer_whitelist is None
