"""Ids of the rows the message path writes (events, runs): UUID version 7 (RFC 9562).

Why: a version 7 UUID starts with its millisecond timestamp, so the rows written together sit
together in every index keyed by them (an event's and a run's primary key, a run's
(event, pipeline), a stage's (run, stage)). With random (version 4) ids each row of a batch
lands on a page of its own in each of those indexes: every commit writes more pages (SQLite's
WAL, PostgreSQL's WAL and buffers), and once a store outgrows memory, every insert reads one."""
from __future__ import annotations

import os
import time
import uuid

_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62
_RANDOM_A = (1 << 12) - 1  # 12 bits after the version
_RANDOM_B = (1 << 62) - 1  # 62 bits after the variant


def new_id() -> uuid.UUID:
    """A fresh version 7 UUID: 48 bits of Unix time in ms, then 74 random bits."""
    random = int.from_bytes(os.urandom(10), "big")
    return uuid.UUID(int=(time.time_ns() // 1_000_000) << 80 | _VERSION_7 | (random >> 64 & _RANDOM_A) << 64
                     | _VARIANT | random & _RANDOM_B)
