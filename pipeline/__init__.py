"""Event-driven pipelines for Django on Dramatiq and RabbitMQ.

Public API: declare event schemas with `event_type`, pipelines with `Pipeline`, emit events
with `emit`, start a pipeline directly with `start`.

This module is the engine's one door: `web/`, `schedules/` and user code import from
`pipeline`, never from its other modules (`tests/test_layers.py` checks it).
Public submodules: `pipeline.conf` (the settings accessor, `conf.get("PIPELINE_…")`) and
`pipeline.project` (what a Django project adds to its settings: `pipeline_settings(...)`).

The engine's internal modules are underscored (`_runtime`, `flow._gate`): free to change.

The names marked "needs the app registry" (the run store's models and every module that imports
them) are loaded on first use (PEP 562 `__getattr__`): Django imports this package, and the
settings and django-dramatiq's middleware import it, before its app registry is ready, when no
model may be imported yet. So the engine's modules import the models at their top, and none of
them needs an import inside a function to get round the app registry."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import conf
from ._broker import broker_urls, check_broker, queue_depths, redacted_url, stage_queues
from ._definitions import Pipeline, registry
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
from ._files import create_private, write_private
from .flow import URGENT, Batch, Concurrency, Debounce, RateLimit, Singleton
from ._log_lines import MAX_LINE_BYTES, parse_line
from ._logfiles import Scan as LogScan, lines_about as log_lines_about
from .logging import get_logger, redact
from .metrics import bind_address, scheduler_port, start_http_server, worker_port
from ._payloads import event_type, validate_start_payload
from .request_context import trust_received_trace
from ._schemas import schemas as event_schemas
from ._status_index import status_in, status_is
from ._statuses import ACTIVE_RUN_STATUSES, FINAL_RUN_STATUSES, RunStatus, StageStatus
from ._store_health import outage as store_outage
from ._tracing import new_trace_id

if TYPE_CHECKING:  # what `__getattr__` loads, for type checkers and readers
    from ._context import EventView, StageContext
    from ._events import emit, start
    from ._liveness import live_workers, worker_is_offline, worker_offline_after
    from .metrics._exposition import SystemCollector, exposition
    from .models import Event, Run, StageRun, WorkerHeartbeat
    from .flow._slots_gate import wait_reason
    from ._operations import cancel, failed_runs, replay
    from ._outcomes import add_outcome_listener, add_outcome_observer
    from ._publisher import relay_once

__all__ = [
    # Declaring work
    "Pipeline",
    "event_type",
    "validate_start_payload",
    # Starting and running work (needs the app registry)
    "emit",
    "start",
    "StageContext",
    "EventView",
    # Flow control (pipeline/flow/): rates, windows, priority; concurrency and singletons
    "RateLimit",
    "Debounce",
    "Batch",
    "URGENT",
    "Concurrency",
    "Singleton",
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
    # Statuses
    "RunStatus",
    "StageStatus",
    "ACTIVE_RUN_STATUSES",
    "FINAL_RUN_STATUSES",
    "status_is",  # Run.objects.filter(status_is("failed")): the status indexes are partial, see pipeline/_status_index.py
    "status_in",
    # The run store (needs the app registry)
    "Event",
    "Run",
    "StageRun",
    "WorkerHeartbeat",
    # Worker liveness: one threshold for every reader (needs the app registry)
    "live_workers",
    "worker_is_offline",
    "worker_offline_after",
    # Operations on runs (needs the app registry)
    "cancel",
    "replay",
    "failed_runs",
    "relay_once",
    # Why a run waits for a flow-control slot (needs the app registry)
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
    "queue_depths",
    "stage_queues",
    "redacted_url",
    "store_outage",
    # Logs and traces
    "get_logger",
    "redact",
    "new_trace_id",
    "trust_received_trace",
    "parse_line",
    "MAX_LINE_BYTES",
    "log_lines_about",
    "LogScan",
    # Metrics
    "bind_address",
    "worker_port",
    "scheduler_port",
    "start_http_server",
    # Metrics of the whole system (needs the app registry)
    "exposition",
    "SystemCollector",
]

# The names loaded on first use, by the module that defines them (under the same name).
_LAZY_FROM: dict[str, tuple[str, ...]] = {
    "_context": ("StageContext", "EventView"),
    "_events": ("emit", "start"),
    "_liveness": ("live_workers", "worker_is_offline", "worker_offline_after"),
    "metrics._exposition": ("SystemCollector", "exposition"),
    "models": ("Event", "Run", "StageRun", "WorkerHeartbeat"),
    "_operations": ("cancel", "failed_runs", "replay"),
    "_outcomes": ("add_outcome_listener", "add_outcome_observer"),
    "_publisher": ("relay_once",),
    "flow._slots_gate": ("wait_reason",),
}
_LAZY: dict[str, str] = {name: module for module, names in _LAZY_FROM.items() for name in names}


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
