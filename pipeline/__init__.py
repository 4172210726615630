"""Event-driven pipelines for Django on Dramatiq and RabbitMQ.

Public API: declare event schemas with `event_type`, pipelines with `Pipeline`, emit events
with `emit`, start a pipeline directly with `start`.

This module is the engine's one door: `web/`, `schedules/` and user code import from
`pipeline`, never from its other modules (`tests/test_layers.py` checks it).
Public submodules: `pipeline.conf` (the settings accessor, `conf.get("PIPELINE_…")`) and
`pipeline.project` (what a Django project adds to its settings: `pipeline_settings(...)`).

The names in the "needs the app registry" groups (the run store's models and what queries
them) are loaded on first use (PEP 562 `__getattr__`): Django imports this package before its
app registry is ready, when no model may be imported yet."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import conf
from .broker import broker_urls, check_broker, for_probe, quiet_pika, redacted_url
from .context import EventView, StageContext
from .definitions import Pipeline, registry
from .flow import Concurrency, Singleton
from .errors import (
    BrokerUnavailable,
    DefinitionError,
    EventError,
    InvalidPayload,
    OperationRefused,
    PayloadTooLarge,
    PipelineError,
    ReservedName,
    RunNotFound,
    StoreUnavailable,
    TraceUsageError,
    UnknownEventType,
)
from .events import emit, event_type, schemas as event_schemas, start, validate_start_payload
from .files import create_private, write_private
from .logfiles import MAX_LINE_BYTES, parse_line
from .logging import get_logger, redact
from .metrics import SystemCollector, bind_address, exposition, scheduler_port, start_http_server, worker_port
from .request_context import trust_received_trace
from .store_health import outage as store_outage
from .tracing import new_trace_id

if TYPE_CHECKING:  # what `__getattr__` loads, for type checkers and readers
    from .models import ACTIVE_RUN_STATUSES, Event, Run, RunStatus, StageRun, StageStatus, WorkerHeartbeat
    from .flow.gate import wait_reason
    from .operations import cancel, failed_runs, replay
    from .outcomes import add_listener as add_outcome_listener, add_observer as add_outcome_observer
    from .publisher import relay_once

__all__ = [
    # Declaring and starting work
    "Pipeline",
    "Concurrency",
    "Singleton",
    "StageContext",
    "EventView",
    "event_type",
    "emit",
    "start",
    "validate_start_payload",
    # What is declared
    "registry",
    "event_schemas",
    # Errors
    "PipelineError",
    "DefinitionError",
    "EventError",
    "InvalidPayload",
    "PayloadTooLarge",
    "ReservedName",
    "UnknownEventType",
    "OperationRefused",
    "RunNotFound",
    "BrokerUnavailable",
    "StoreUnavailable",
    "TraceUsageError",
    # The run store (needs the app registry)
    "Event",
    "Run",
    "RunStatus",
    "StageRun",
    "StageStatus",
    "WorkerHeartbeat",
    "ACTIVE_RUN_STATUSES",
    # Operations on runs (needs the app registry)
    "cancel",
    "replay",
    "failed_runs",
    "relay_once",
    "wait_reason",
    # Reacting to a run's end (needs the app registry)
    "add_outcome_listener",
    "add_outcome_observer",
    # Settings, files, the broker
    "conf",
    "create_private",
    "write_private",
    "check_broker",
    "broker_urls",
    "for_probe",
    "quiet_pika",
    "redacted_url",
    "store_outage",
    # Logs and traces
    "get_logger",
    "redact",
    "new_trace_id",
    "trust_received_trace",
    "parse_line",
    "MAX_LINE_BYTES",
    # Metrics
    "exposition",
    "bind_address",
    "worker_port",
    "scheduler_port",
    "start_http_server",
    "SystemCollector",
]

# name -> (module, attribute) for the names loaded on first use.
_LAZY: dict[str, tuple[str, str]] = {
    **{name: ("models", name) for name in ("Event", "Run", "RunStatus", "StageRun", "StageStatus", "WorkerHeartbeat",
                                           "ACTIVE_RUN_STATUSES")},
    **{name: ("operations", name) for name in ("cancel", "failed_runs", "replay")},
    "add_outcome_listener": ("outcomes", "add_listener"),
    "add_outcome_observer": ("outcomes", "add_observer"),
    "relay_once": ("publisher", "relay_once"),
    "wait_reason": ("flow.gate", "wait_reason"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value
