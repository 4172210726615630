"""`Concurrency`: at most `limit` runs of a pipeline in progress per key (and, with `total`, at
most `total` across all keys, the keys taking turns); the rest wait in the run store."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DefinitionError


@dataclass(frozen=True)
class Concurrency:
    """`Pipeline("fulfil_order", on="order.placed", concurrency=Concurrency(limit=1, key="customer_id"))`:
    one `fulfil_order` run in progress per customer at a time, across every worker.

    - `limit`: runs in progress per key value (with `key=None`: in all).
    - `key`: a dotted path into the event payload; `None` = one global group.
    - `total`: at most this many in progress across all keys; a freed slot goes to the next key
      in turn (round-robin), so one busy key cannot keep another key's first run waiting."""

    limit: int
    key: str | None = None
    total: int | None = None

    def __post_init__(self) -> None:
        if not _positive(self.limit):
            raise DefinitionError(f"Concurrency(limit={self.limit!r}): limit must be an integer >= 1")
        if self.total is not None:
            if not _positive(self.total):
                raise DefinitionError(f"Concurrency(total={self.total!r}): total must be an integer >= 1")
            if self.key is None:
                raise DefinitionError("Concurrency(total=...) needs a key: without one, limit is already the total")


def _positive(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1
