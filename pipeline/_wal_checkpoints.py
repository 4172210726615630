"""The SQLite write-ahead log copied back into the database off the commit path."""
from __future__ import annotations

import sqlite3
import time

CHECKPOINT_INTERVAL_SECONDS = 0.2


def checkpoint_forever(path: str, counters: dict[str, int]) -> None:
    """Copies the write-ahead log back into the database every 200 ms, on a connection of its
    own, when batches were written since the last time (`counters["batches"]`). Left to SQLite
    alone, the commit that crosses 1,000 WAL pages copies them and syncs the file while every
    thread of its batch waits; a PASSIVE checkpoint takes no write lock, so batches go on
    meanwhile, and the automatic one then finds the pages already copied (measured: 238 ->
    316-351 runs/s, 2x8 workers)."""
    conn = None
    seen = -1
    while True:
        time.sleep(CHECKPOINT_INTERVAL_SECONDS)
        if counters["batches"] == seen:
            continue  # nothing written since the last checkpoint
        seen = counters["batches"]
        try:
            if conn is None:
                conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception:  # busy, or the file went away (a test database): try again later
            if conn is not None:
                conn.close()
            conn = None
