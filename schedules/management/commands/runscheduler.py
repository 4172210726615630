"""`manage.py runscheduler`: fires the declared schedules and runs the outbox relay."""
import signal

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipeline.logging import get_logger
from schedules.registry import schedules
from schedules.runner import build_scheduler

log = get_logger("schedules.runner")


class Command(BaseCommand):
    help = "Runs the scheduler: each fire starts a run (the work happens in the workers)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only", nargs="*", help="fire only these schedules (default: all)")

    def handle(self, *args, **options):
        only = options.get("only")
        unknown = [name for name in only or [] if name not in schedules]
        if unknown:
            raise CommandError(f"unknown schedule(s): {', '.join(unknown)} (known: {', '.join(sorted(schedules))})",
                               returncode=2)
        scheduler = build_scheduler(only)

        def stop(signum, _frame):
            log.info("scheduler.stopping", signal=signal.Signals(signum).name)
            scheduler.shutdown(wait=False)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("scheduler.started", schedules=sorted(only or schedules))
        scheduler.start()
        log.info("scheduler.stopped")
