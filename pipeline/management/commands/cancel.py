"""`manage.py cancel RUN_ID`."""
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipeline._operations import OperationRefused, RunNotFound, cancel


class Command(BaseCommand):
    help = "Cancels a run: no further stage starts; a running stage sees ctx.cancelled."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id")

    def handle(self, *args, **options):
        try:
            cancel(options["run_id"])
        except RunNotFound as exc:
            raise CommandError(str(exc), returncode=1) from None
        except OperationRefused as exc:
            raise CommandError(str(exc), returncode=2) from None
        self.stdout.write(f"cancelled {options['run_id']}")
