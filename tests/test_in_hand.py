"""What the shared test workers say they hold (tests/in_hand.py), read as the test process reads it."""
from __future__ import annotations

import json
import os
import time

from tests.in_hand import DROPPED_AFTER_SECONDS, held


def test_nothing_written_yet_is_none_and_a_process_that_is_gone_holds_nothing(tmp_path):
    assert held(tmp_path) is None
    (tmp_path / "999999999").write_text(json.dumps([None]))  # no such process
    assert held(tmp_path) is None


def test_messages_being_processed_and_delayed_ones_count_until_well_past_due(tmp_path):
    now = time.time()
    (tmp_path / str(os.getpid())).write_text(json.dumps([None, now + 60, now - 1, now - DROPPED_AFTER_SECONDS - 5]))
    (tmp_path / f"{os.getpid()}.tmp").write_text("[null, null]")  # a write in progress: not read
    # Processing; due in a minute; just due (a thread takes it in a moment); long past due and not
    # taken: dropped by a consumer that reconnected (the broker delivers it again).
    assert held(tmp_path) == 3
    (tmp_path / str(os.getpid())).write_text("[]")
    assert held(tmp_path) == 0
