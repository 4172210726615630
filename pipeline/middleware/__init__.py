"""Dramatiq middleware of the engine, one class per module."""
from .logging_context import LoggingContext

__all__ = ["LoggingContext"]
