"""Dramatiq middleware of the engine, one class per module."""
from ._drain import Drain
from ._heartbeat import Heartbeat
from ._logging_context import LoggingContext
from ._long_delays import LongDelays
from ._metrics import WorkerMetrics
from ._urgent_queues import UrgentQueues

__all__ = ["Drain", "Heartbeat", "LoggingContext", "LongDelays", "UrgentQueues", "WorkerMetrics"]
