"""Dramatiq middleware of the engine, one class per module."""
from .drain import Drain
from .heartbeat import Heartbeat
from .logging_context import LoggingContext
from .long_delays import LongDelays
from .metrics import WorkerMetrics
from .urgent_queues import UrgentQueues

__all__ = ["Drain", "Heartbeat", "LoggingContext", "LongDelays", "UrgentQueues", "WorkerMetrics"]
