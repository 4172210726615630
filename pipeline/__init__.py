"""Event-driven pipelines for Django on Dramatiq and RabbitMQ.

Public API: declare event schemas with `event_type`, pipelines with `Pipeline`, emit events
with `emit`, start a pipeline directly with `start`."""
from .context import EventView, StageContext
from .definitions import Pipeline
from .errors import (
    DefinitionError,
    EventError,
    InvalidPayload,
    PayloadTooLarge,
    PipelineError,
    ReservedName,
    UnknownEventType,
)
from .events import emit, event_type, start

__all__ = [
    "DefinitionError",
    "EventError",
    "EventView",
    "InvalidPayload",
    "PayloadTooLarge",
    "Pipeline",
    "PipelineError",
    "ReservedName",
    "StageContext",
    "UnknownEventType",
    "emit",
    "event_type",
    "start",
]
