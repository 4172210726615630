"""Dramatiq middleware of the engine, one class per module."""
from .drain import Drain
from .heartbeat import Heartbeat
from .logging_context import LoggingContext
from .long_delays import LongDelays
from .metrics import WorkerMetrics

__all__ = ["Drain", "Heartbeat", "LoggingContext", "LongDelays", "WorkerMetrics"]
