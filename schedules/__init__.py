"""Recurring jobs: declare them in an app's `schedules.py` with `every`, `cron` or `once`;
`manage.py runscheduler` fires them (never doing the work itself: each fire starts a run)."""
from .registry import Schedule, ScheduleError, cron, every, once

__all__ = ["Schedule", "ScheduleError", "cron", "every", "once"]
