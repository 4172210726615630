"""The declared event types and their pydantic schemas: the bottom of the engine's layers.

Filled by `pipeline._payloads.event_type`; read by `definitions` (a pipeline must subscribe to a
declared type), `payloads` (a payload is validated against its type's schema) and the web. Kept
apart from `payloads` and `events` so that what is declared does not import what checks or emits."""
from __future__ import annotations

import pydantic

schemas: dict[str, type[pydantic.BaseModel]] = {}
