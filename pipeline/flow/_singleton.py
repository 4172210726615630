"""`Singleton`: one run of a pipeline at a time per key; a start while one is in progress is
either skipped (recorded as `skipped`) or cancels the run in progress and takes its place."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DefinitionError

MODES = ("skip", "cancel")


@dataclass(frozen=True)
class Singleton:
    """`Pipeline("reindex", on="catalog.changed", singleton=Singleton(key="shop_id", mode="cancel"))`.

    - `key`: a dotted path into the event payload; `None` = one run of the pipeline at a time.
    - `mode`: `"skip"` (the new run ends `skipped` at once) or `"cancel"` (the run in progress is
      cancelled, the new one starts)."""

    key: str | None = None
    mode: str = "skip"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DefinitionError(f"Singleton(mode={self.mode!r}): mode must be one of {', '.join(MODES)}")
