"""`manage.py schedule list|pause|resume|trigger|backfill`: operate schedules from the shell."""
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from schedules import operations
from schedules.models import ScheduleRecord
from schedules.registry import ScheduleError


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"not an ISO 8601 date-time: {value!r}", returncode=2) from None
    if moment.tzinfo is None:
        raise CommandError(f"{value!r} needs a UTC offset, e.g. 2026-01-01T00:00:00+00:00", returncode=2)
    return moment


class Command(BaseCommand):
    help = "Lists schedules, pauses/resumes/triggers one, or backfills a time range."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        for action in ("pause", "resume", "trigger"):
            sub.add_parser(action).add_argument("name")
        backfill = sub.add_parser("backfill")
        backfill.add_argument("name")
        backfill.add_argument("--start", required=True, help="ISO 8601 with offset")
        backfill.add_argument("--end", required=True, help="ISO 8601 with offset (inclusive)")

    def handle(self, *args, **options):
        action = options["action"]
        try:
            if action == "list":
                for r in ScheduleRecord.objects.select_related("last_run").order_by("name"):
                    self.stdout.write(
                        f"{r.name:32} {'paused' if r.paused else 'active':7} next={r.next_fire_at} "
                        f"last={r.last_fire_at} last_run={r.last_run_status or '-'}"
                    )
            elif action == "pause":
                operations.pause(options["name"])
                self.stdout.write(f"paused {options['name']}")
            elif action == "resume":
                operations.resume(options["name"])
                self.stdout.write(f"resumed {options['name']}")
            elif action == "trigger":
                started = operations.trigger_now(options["name"])
                self.stdout.write(f"triggered {options['name']}: {started}")
            else:
                start, end = _moment(options["start"]), _moment(options["end"])
                result = operations.backfill(
                    options["name"], start, end,
                    progress=lambda it: tqdm(it, desc=f"backfilling {options['name']}", unit="fire",
                                             file=self.stderr._out),
                )
                self.stdout.write(f"{result['runs_started']} runs started for {result['fire_times']} fire times")
        except operations.ScheduleNotFound as exc:
            raise CommandError(str(exc), returncode=1) from None
        except ScheduleError as exc:
            raise CommandError(str(exc), returncode=2) from None
