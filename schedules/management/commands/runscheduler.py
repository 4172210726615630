"""`manage.py runscheduler`: run as many as you like; one leads and fires, the others stand by."""
import signal

from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules.metrics import start_scheduler_server
from schedules.models import ScheduleRecord
from schedules.registry import schedules
from schedules.runner import SchedulerProcess


class Command(BaseCommand):
    help = "Runs a scheduler: one of any number leads; each fire starts a run (the work happens in the workers)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only", nargs="*", help="fire only these schedules (default: all)")
        parser.add_argument("--lease-seconds", type=float, default=5.0,
                            help="how long a silent leader keeps the lead before another takes over")

    def handle(self, *args, **options):
        only = options.get("only") or []
        known = set(schedules) | set(ScheduleRecord.objects.values_list("name", flat=True))
        unknown = [name for name in only if name not in known]
        if unknown:
            raise CommandError(f"unknown schedule(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})",
                               returncode=2)
        start_scheduler_server()
        process = SchedulerProcess(only=only, lease_ttl=options["lease_seconds"])
        signal.signal(signal.SIGTERM, lambda *_: process.stop())
        signal.signal(signal.SIGINT, lambda *_: process.stop())
        process.run()
