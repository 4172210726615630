"""The one place a stage message passes flow control before its stage runs.

Both halves of flow control act here, in this order: the flow gate (`pipeline.flow._gate`:
debounce/batch windows and rate limits, for a stage that is `gated`), then the claim
(`pipeline._stage_store.claim`), which takes the stage's own concurrency slot in the claim's
transaction (`pipeline.flow._stage_slots`). A run's own concurrency and singletons were settled
when the run was admitted (`pipeline.flow._slots`): a waiting run has no stage message to claim.
A stage that declares nothing goes straight to the claim, so the hot path does not change."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from .. import _stage_store as stage_store
from . import _gate as gate
from ._rules import GATE_PASSED

if TYPE_CHECKING:
    from .._definitions import Stage
    from .._run_info import RunInfo


def claim(
    stage: "Stage", info: "RunInfo", message: Any, message_id: str, worker: str, lease_until: datetime,
    results: dict | None, take_back: str | None = None,
) -> tuple[int, dict, bool] | Literal[False] | None:
    """(attempt, parents' results, whether this claim started the run) when the stage may run
    now; False when flow control ended this delivery (held, throttled, folded or dropped by the
    gate, or over the stage's own concurrency limit: it waits, published again when handed a
    slot); None when not claimed (a duplicate or stale message: the runtime looks why).
    `take_back`: see `pipeline._redelivery.inspect`."""
    # Taken off the message here, so a retry of this delivery passes the gate like any other.
    passed = message is not None and message.options.pop(GATE_PASSED, False)
    if (admitted := gate.admit(stage, info, message) if stage.gated and not passed else True) is False:
        return False
    claimed = stage_store.claim(stage, info, message_id, worker, lease_until, results,
                                started_at=None if admitted is True else admitted, take_back=take_back)
    return False if isinstance(claimed, stage_store.Waits) else claimed


def needs_own_message(stage: "Stage") -> bool:
    """Whether `stage` must not be continued inline by its parent's worker: a gated stage (e.g.
    rate-limited) passes the flow gate in a message of its own, and a stage with its own
    concurrency limit takes a slot when claimed."""
    return bool(stage.gated or stage.concurrency)
