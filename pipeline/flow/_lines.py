"""Flow control's log lines for what an admission did (`flow.waiting`, `flow.dropped`), and who
hears of the runs a singleton start cancelled (the outcomes module, which emits their
`run.cancelled`: registered by it, so that emitting an event does not import it back)."""
from __future__ import annotations

from typing import Any, Callable

from ..logging import get_logger, info_on_commit

log = get_logger("pipeline.flow")
SINGLETON = "singleton"

# (run id, pipeline) of each run a singleton start cancelled, inside that transaction.
cancelled_observers: list[Callable[[str, str], None]] = []


def runs_cancelled(run_ids: list[str], pipeline: str) -> None:
    for run_id in run_ids:
        for observe in cancelled_observers:
            observe(run_id, pipeline)


def log_admission(admission: Any, ids: dict[str, Any]) -> None:
    """`flow.waiting`, `flow.dropped` (a skipped start, or the runs a singleton start cancelled)."""
    rule = {"rule": admission.rule, "key": admission.key}
    if admission.status == "waiting":
        info_on_commit(log, "flow.waiting", **rule, **ids, limit=admission.limit,
                       reason=f"{admission.limit} run(s) of this key in progress")
    elif admission.status == "skipped":
        info_on_commit(log, "flow.dropped", **rule, **ids, outcome="skipped", in_progress=admission.holders,
                       reason="a run of this key is in progress")
    for old in admission.replaced:
        info_on_commit(log, "flow.dropped", **rule, pipeline=ids["pipeline"], run_id=old, outcome="cancelled",
                       replaced_by=ids["run_id"], reason="a newer run of this key started")
        info_on_commit(log, "run.cancelled", run_id=old, pipeline=ids["pipeline"], reason=f"{SINGLETON}: replaced",
                       replaced_by=ids["run_id"])
