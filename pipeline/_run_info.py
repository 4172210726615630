"""`RunInfo`: what a stage needs of its run and event, carried in the stage message when it is
small (`PIPELINE_MESSAGE_CARRY_BYTES`), else read once from the store."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from . import conf

JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


@dataclass
class RunInfo:
    """What a stage needs of its run and event: carried in the message, or read once."""

    run_id: str
    pipeline: str
    event_id: str
    trace_id: str
    event_type: str | None = None
    payload: dict | None = None
    occurred_at: datetime | None = None
    started_at: datetime | None = None
    priority: str | None = None  # "urgent" when the event asked for it (pipeline.flow._priority)

    @classmethod
    def from_message(cls, run_id: str, pipeline: str, options: dict) -> "RunInfo":
        occurred = options.get("occurred_at")
        started = options.get("run_started_at")
        return cls(
            run_id=str(run_id), pipeline=pipeline, event_id=options.get("event_id", ""),
            trace_id=options.get("trace_id", ""), event_type=options.get("event_type"),
            payload=options.get("payload"),
            occurred_at=datetime.fromisoformat(occurred) if occurred else None,
            started_at=datetime.fromisoformat(started) if started else None, priority=options.get("priority"),
        )

    def carried(self, results: dict | None) -> dict[str, Any]:
        """The options a next stage message carries, the payload and results only when small."""
        limit = conf.get("PIPELINE_MESSAGE_CARRY_BYTES")
        out: dict[str, Any] = {"event_type": self.event_type}
        if self.occurred_at is not None:
            out["occurred_at"] = self.occurred_at.isoformat()
        if self.started_at is not None:
            out["run_started_at"] = self.started_at.isoformat()
        if self.priority is not None:
            out["priority"] = self.priority
        budget = limit
        if self.payload is not None:
            size = len(orjson.dumps(self.payload, option=JSON_OPTIONS))
            if size <= budget:
                out["payload"] = self.payload
                budget -= size
        if results is not None:
            size = len(orjson.dumps(results, option=JSON_OPTIONS))
            if size <= budget:
                out["results"] = results
        return out
