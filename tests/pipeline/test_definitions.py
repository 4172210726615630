"""Declaring pipelines: mistakes are caught when the module is imported, with a clear message."""
import dramatiq
import pytest

from pipeline import DefinitionError, Pipeline
from pipeline._definitions import registry


pytestmark = pytest.mark.usefixtures("restore_registry")  # tests/pipeline/conftest.py


def test_stages_run_in_declaration_order_by_default():
    p = Pipeline("def_linear")
    for name in ("a", "b", "c"):
        p.stage(name)(lambda ctx: None)
    assert [s.after for s in p.stages.values()] == [(), ("a",), ("b",)]
    assert [s.name for s in p.roots] == ["a"]
    assert [c.name for c in p.children("a")] == ["b"]


def test_fan_out_and_fan_in_are_declared_with_after():
    p = Pipeline("def_dag")
    p.stage("start")(lambda ctx: None)
    p.stage("left", after=["start"])(lambda ctx: None)
    p.stage("right", after=["start"])(lambda ctx: None)
    p.stage("join", after=["left", "right"])(lambda ctx: None)
    assert {c.name for c in p.children("start")} == {"left", "right"}
    assert p.stages["join"].after == ("left", "right")


def test_after_naming_an_unknown_stage_is_refused():
    p = Pipeline("def_unknown")
    p.stage("a")(lambda ctx: None)
    with pytest.raises(DefinitionError, match=r"unknown stage\(s\) \['nope'\]"):
        p.stage("b", after=["nope"])(lambda ctx: None)


def test_a_cycle_cannot_be_declared_because_after_names_only_earlier_stages():
    p = Pipeline("def_cycle")
    p.stage("a")(lambda ctx: None)
    with pytest.raises(DefinitionError, match="can only follow stages declared before it"):
        p.stage("b", after=["b"])(lambda ctx: None)


def test_duplicate_stage_and_pipeline_names_are_refused():
    p = Pipeline("def_dup")
    p.stage("a")(lambda ctx: None)
    with pytest.raises(DefinitionError, match="stage 'a' is declared twice"):
        p.stage("a")(lambda ctx: None)
    with pytest.raises(DefinitionError, match="pipeline 'def_dup' is declared twice"):
        Pipeline("def_dup")


def test_pipeline_without_stages_fails_validation():
    Pipeline("def_empty")
    with pytest.raises(DefinitionError, match="pipeline 'def_empty' has no stages"):
        registry.validate()


def test_pipeline_subscribed_to_an_event_without_schema_fails_validation():
    p = Pipeline("def_no_schema", on="nobody.declared.this")
    p.stage("a")(lambda ctx: None)
    with pytest.raises(DefinitionError, match="no registered event schema"):
        registry.validate()


@pytest.mark.parametrize(
    "options, message",
    [({"retries": -1}, "negative retries"), ({"backoff": (5, 1)}, "min <= max"), ({"timeout": 0}, "positive")],
)
def test_invalid_stage_options_are_refused(options, message):
    p = Pipeline("def_options")
    with pytest.raises(DefinitionError, match=message):
        p.stage("a", **options)(lambda ctx: None)


def test_each_stage_is_a_dramatiq_actor_with_its_own_time_limit():
    p = Pipeline("def_actor", queue="special")
    p.stage("a", timeout=7)(lambda ctx: None)
    actor = dramatiq.get_broker().get_actor("def_actor.a")
    assert actor.queue_name == "special" and actor.options["time_limit"] == 7000


def test_a_pipeline_started_by_outcomes_must_name_whose_and_not_its_own():
    with pytest.raises(DefinitionError, match="say of which pipelines with of="):
        Pipeline("def_any_outcome", on="run.failed")
    with pytest.raises(DefinitionError, match="cannot be started by its own outcome"):
        Pipeline("def_self_outcome", on="run.succeeded", of=["def_self_outcome"])


def test_pipelines_starting_each_other_by_their_outcomes_are_refused():
    a = Pipeline("def_loop_a", on="run.succeeded", of=["def_loop_b"])
    a.stage("x")(lambda ctx: None)
    b = Pipeline("def_loop_b", on="run.failed", of=["def_loop_a"])
    b.stage("y")(lambda ctx: None)
    with pytest.raises(DefinitionError, match="in a loop: def_loop_a -> def_loop_b -> def_loop_a"):
        registry.validate()


def test_after_takes_the_stage_functions_themselves():
    p = Pipeline("def_by_function")

    @p.stage()
    def fetch(ctx):
        return None

    @p.stage(after=fetch)
    def left(ctx):
        return None

    @p.stage(after=[fetch])
    def right(ctx):
        return None

    @p.stage(after=[left, "right"])
    def join(ctx):
        return None

    assert join.__name__ == "join"  # the decorator gives the function back unchanged
    assert [(s.name, s.after) for s in p.stages.values()] == [
        ("fetch", ()), ("left", ("fetch",)), ("right", ("fetch",)), ("join", ("left", "right"))]


def test_after_naming_a_function_that_is_no_stage_of_this_pipeline_is_refused():
    other = Pipeline("def_other")

    @other.stage()
    def elsewhere(ctx):
        return None

    p = Pipeline("def_foreign_parent")
    p.stage("first")(lambda ctx: None)
    with pytest.raises(DefinitionError, match=r"after= names the function .*elsewhere, which is not a stage of this "
                                              r"pipeline declared before this one \(declared: \['first'\]\)"):
        p.stage("second", after=[elsewhere])(lambda ctx: None)


def test_after_naming_a_function_used_by_two_stages_is_refused():
    p = Pipeline("def_shared_function")

    def shared(ctx):
        return None

    p.stage("one")(shared)
    p.stage("two", after=["one"])(shared)
    with pytest.raises(DefinitionError, match=r"function of stages \['one', 'two'\]: name the one you mean"):
        p.stage("three", after=[shared])(lambda ctx: None)
