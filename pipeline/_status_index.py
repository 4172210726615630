"""Which runs the run table's status indexes hold, and the query term that lets a query use them.

Every run goes pending -> running -> succeeded. An index keyed by status moves each run's entry
from one part of the index to another at each of those steps, and each part is a page of its own
that the step's commit writes again: with three such indexes, ~5.6 of the 29.5 pages (WAL frames)
a run wrote on SQLite (issue 19, the hot-path tool at 8 threads; 25.7 with the partial indexes
below). So the status indexes are partial:

- `run_active_idx` holds the runs under way (ACTIVE_RUN_STATUSES), keyed by status then newest
  first: a step moves a run's entry to the newest end of its status's part, the page every recent
  run's entry shares, and a run that ends leaves the index (status first: the runs list reads one
  status in time order without sorting, and the metrics' gauge reads only this small index);
- `run_unsuccessful_idx`, `run_pipeline_unsuccessful_idx` and `run_type_unsuccessful_idx` hold the
  runs that ended otherwise than succeeded (UNSUCCESSFUL_RUN_STATUSES): what an operator looks for
  to repair, found at once at any size, and never touched by a run that succeeds;
- succeeded runs, the bulk of the table, are read through the indexes in `created_at` order
  (run_recent_idx, run_pipeline_recent_idx, run_type_recent_idx), where most entries are theirs.

SQLite uses a partial index only when the query repeats the index's condition as one of its
terms, with the same literal values (a bound parameter does not count, and `status = 'failed'` is
not taken to imply `status IN ('failed', ...)`). `status_is` and `status_in` add that term; every
query of runs by status goes through them."""
from __future__ import annotations

from typing import Any, Iterable

from django.db.models import BooleanField, Expression, F, Q

from ._statuses import ACTIVE_RUN_STATUSES, FINAL_RUN_STATUSES, RunStatus, sql_list

UNSUCCESSFUL_RUN_STATUSES = tuple(s for s in FINAL_RUN_STATUSES if s != RunStatus.SUCCEEDED)
# Each partial index's statuses, as text, in the order its condition lists them (the term must match).
_GROUPS = tuple(tuple(str(s) for s in group) for group in (ACTIVE_RUN_STATUSES, UNSUCCESSFUL_RUN_STATUSES))

# The conditions of the partial indexes (pipeline/models.py); StatusIn renders the same terms.
ACTIVE_CONDITION = Q(status__in=list(ACTIVE_RUN_STATUSES))
UNSUCCESSFUL_CONDITION = Q(status__in=list(UNSUCCESSFUL_RUN_STATUSES))


class StatusIn(Expression):
    """`<the run's status column> IN ('a', 'b')` with the values written into the SQL (ours,
    never user input), so that the planner can match it with a partial index's condition."""

    conditional = True
    output_field = BooleanField()

    def __init__(self, statuses: Iterable[str]) -> None:
        super().__init__()
        self.statuses = tuple(str(s) for s in statuses)
        self.column: Any = F("status")

    def get_source_expressions(self) -> list[Any]:
        return [self.column]

    def set_source_expressions(self, exprs: list[Any]) -> None:
        (self.column,) = exprs

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.column)
        return f"{column} IN {sql_list(self.statuses)}", list(params)


def _partition(statuses: set[str]) -> tuple[str, ...] | None:
    """The partial index's status group that holds every one of `statuses`, if one does."""
    return next((group for group in _GROUPS if statuses <= set(group)), None)


def status_in(statuses: Iterable[str]) -> Q:
    """Runs whose status is one of `statuses`, in a form a partial status index can answer."""
    wanted = [str(s) for s in statuses]
    condition = Q(status__in=wanted) if len(wanted) != 1 else Q(status=wanted[0])
    group = _partition(set(wanted))
    return condition if group is None else condition & Q(StatusIn(group))


def status_is(status: str) -> Q:
    """Runs in `status`, in a form a partial status index can answer."""
    return status_in([status])
