"""The flow-control declarations this package owns, as small frozen dataclasses checked when
they are made (N < 1, a negative period... raise DefinitionError at import). Keys are checked
against the event's schema later, by `Registry.validate()` (`pipeline.flow._keys.check_key`).

They hold no behaviour: `pipeline.flow._gate` applies them to a stage message."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DefinitionError

NORMAL, URGENT = "normal", "urgent"
PRIORITIES = (NORMAL, URGENT)
# Message option of a stage published again once its own concurrency slot is free: it passed the
# flow gate (paid its rate-limit token, left its window) before it waited, so it does not again.
GATE_PASSED = "flow_gate_passed"
RATE_MODES = ("throttle", "drop")


def _positive(value: object, what: str, *, whole: bool = False) -> None:
    ok = isinstance(value, int) if whole else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        raise DefinitionError(f"{what} must be a {'whole number' if whole else 'number'} above 0, not {value!r}")


def _key(value: object, what: str) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise DefinitionError(f"{what}: key must be a dotted path into the payload (or None), not {value!r}")


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` starts per `per` seconds per key (None: one global key), spread evenly
    (one every per/limit seconds), plus `burst` more at once after a quiet spell: no window of
    `per` seconds holds more than `limit + burst` starts. `mode="throttle"`: the excess waits for
    its turn (the stage shows `throttled`); `mode="drop"`: the excess is not run, its run ends
    cancelled, recorded."""

    limit: int
    per: float = 1.0
    key: str | None = None
    burst: int = 0
    mode: str = "throttle"

    def __post_init__(self) -> None:
        _positive(self.limit, "RateLimit limit (N)", whole=True)
        _positive(self.per, "RateLimit per (seconds)")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 0:
            raise DefinitionError(f"RateLimit burst must be a whole number >= 0, not {self.burst!r}")
        if self.mode not in RATE_MODES:
            raise DefinitionError(f"RateLimit mode must be one of {RATE_MODES}, not {self.mode!r}")
        _key(self.key, "RateLimit")

    @property
    def rule(self) -> str:
        """The name of the rule in log lines: `throttle` (waits) or `rate_limit` (drops)."""
        return "throttle" if self.mode == "throttle" else "rate_limit"


@dataclass(frozen=True)
class Debounce:
    """Events with the same key whose `occurred_at` fall within `seconds` of the previous one
    become one run, with the last event's payload; `max_wait` (seconds after the first event of
    the window) bounds the wait, so a steady stream still runs."""

    seconds: float
    key: str | None = None
    max_wait: float | None = None

    def __post_init__(self) -> None:
        _positive(self.seconds, "Debounce seconds")
        if self.max_wait is not None:
            _positive(self.max_wait, "Debounce max_wait")
            if self.max_wait < self.seconds:
                raise DefinitionError(f"Debounce max_wait ({self.max_wait}) must be >= seconds ({self.seconds})")
        _key(self.key, "Debounce")


@dataclass(frozen=True)
class Batch:
    """Events with the same key are collected into one run: it starts once `size` events are in,
    or `seconds` after the first one's `occurred_at`, whichever comes first. Its stages see the
    events in `ctx.batch`."""

    size: int
    seconds: float
    key: str | None = None

    def __post_init__(self) -> None:
        _positive(self.size, "Batch size (N)", whole=True)
        _positive(self.seconds, "Batch seconds")
        _key(self.key, "Batch")


def check_priority(value: object, where: str) -> str:
    if value not in PRIORITIES:
        raise DefinitionError(f"{where}: priority must be one of {PRIORITIES}, not {value!r}")
    return str(value)
