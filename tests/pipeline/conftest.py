"""Fixtures shared by the engine's tests."""
import dramatiq
import pytest

import pipeline._publisher
from pipeline._definitions import registry


@pytest.fixture
def restore_registry():
    """Pipelines a test declares (and their Dramatiq actors) are gone after it: declaring is
    global state, and the next test's declarations must not meet this one's names."""
    before = dict(registry.pipelines)
    actors = dict(dramatiq.get_broker().actors)
    yield
    registry.pipelines.clear()
    registry.pipelines.update(before)
    dramatiq.get_broker().actors.clear()
    dramatiq.get_broker().actors.update(actors)


@pytest.fixture
def published(monkeypatch):
    """Stage messages recorded instead of sent: (stage, options) of each."""
    sent = []
    monkeypatch.setattr(pipeline._publisher, "enqueue_stage", lambda stage, **kw: sent.append((stage.name, kw)))
    return sent
