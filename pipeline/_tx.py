"""What an operation of the group commit sees (`Tx`): the batch's cursor, the backend's
statements, and writes deferred to the end of the batch, where each kind becomes one multi-row
statement. Apart from `pipeline._writer`, which runs the batches, so that each file has one job."""
from __future__ import annotations

from typing import Any, Callable

from ._sql import Dialect, Statements

# Counted for the hot-path tool (tests/bench/hotpath.py): statements and commits of the run store.
counters = {"statements": 0, "commits": 0, "batches": 0}


DEFERRED_ROWS_PER_STATEMENT = 200


class Tx:
    """What an operation sees: `execute` on the batch's cursor, the backend's statements, and
    `insert_later`/`update_later` for writes whose outcome the operation does not need to read."""

    __slots__ = ("cursor", "d", "q", "_inserts", "_updates")

    def __init__(self, cursor: Any, dialect: Dialect, statements: Statements) -> None:
        self.cursor = cursor
        self.d = dialect
        self.q = statements
        self._inserts: dict[tuple[str, str], list[tuple]] = {}
        self._updates: dict[str, tuple[tuple, list[Any]]] = {}

    def execute(self, sql: str, params: Any = ()) -> Any:
        counters["statements"] += 1
        return self.cursor.execute(sql, params)

    def executemany(self, sql: str, rows: list) -> Any:
        counters["statements"] += 1
        self.cursor.executemany(sql, rows)  # psycopg returns None, sqlite3 the cursor
        return self.cursor

    def insert_later(self, head: str, row_marks: str, row: tuple) -> None:
        """An INSERT run once for the whole batch, as one multi-row statement per table, just
        before the commit: `head` is "INSERT INTO t (cols) VALUES ", `row_marks` "(?, ?, ...)".
        Why: each statement lets go of the GIL and must get it back while the database's write
        lock is held (other processes wait meanwhile); ten emits in a batch cost one statement.
        Tables are written in the order first asked (events before their runs). A failing row
        fails the batch, whose operations are then run one by one: the error reaches its own."""
        self._inserts.setdefault((head, row_marks), []).append(row)

    def update_later(self, template: str, params: tuple, key: Any) -> None:
        """`template` with `{}` for an IN list of keys, run once for the batch with the `params`
        of the first caller (e.g. one timestamp for every event marked published)."""
        pending = self._updates.get(template)
        if pending is None:
            self._updates[template] = (params, [key])
        else:
            pending[1].append(key)

    def flush(self) -> None:
        """Runs the deferred writes (called before the commit)."""
        inserts, self._inserts = self._inserts, {}
        if self.d.vendor == "postgresql" and len(inserts) > 1 and all(
                len(rows) <= DEFERRED_ROWS_PER_STATEMENT for rows in inserts.values()):
            # One round trip: every INSERT in one statement (WITH i0 AS (INSERT ...), ... INSERT ...);
            # the foreign keys between them are checked at commit (Django makes them deferrable).
            parts = [head + ", ".join([marks] * len(rows)) for (head, marks), rows in inserts.items()]
            text = "WITH " + ", ".join(f"i{n} AS ({part})" for n, part in enumerate(parts[:-1])) + " " + parts[-1]
            self.execute(_sql(self.d, text), [value for rows in inserts.values() for row in rows for value in row])
            inserts = {}
        for (head, marks), rows in inserts.items():
            for i in range(0, len(rows), DEFERRED_ROWS_PER_STATEMENT):
                chunk = rows[i:i + DEFERRED_ROWS_PER_STATEMENT]
                self.execute(_sql(self.d, head + ", ".join([marks] * len(chunk))),
                             [value for row in chunk for value in row])
        updates, self._updates = self._updates, {}
        for template, (params, keys) in updates.items():
            for i in range(0, len(keys), DEFERRED_ROWS_PER_STATEMENT):
                chunk = keys[i:i + DEFERRED_ROWS_PER_STATEMENT]
                self.execute(_sql(self.d, template.format(", ".join(["?"] * len(chunk)))), (*params, *chunk))

    def discard(self) -> None:
        self._inserts, self._updates = {}, {}


_SQL_TEXTS: dict[tuple[str, str], str] = {}


def _sql(d: Dialect, text: str) -> str:
    """A deferred statement's text in the backend's placeholders (a few distinct sizes recur)."""
    key = (d.vendor, text)
    converted = _SQL_TEXTS.get(key)
    if converted is None:
        if len(_SQL_TEXTS) > 4096:
            _SQL_TEXTS.clear()
        converted = _SQL_TEXTS[key] = d.sql(text)
    return converted


Operation = Callable[[Tx], Any]
