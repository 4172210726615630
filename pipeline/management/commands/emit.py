"""`manage.py emit TYPE --data JSON`: emit an event from the command line."""
import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipeline import EventError, emit


class Command(BaseCommand):
    help = "Validates and emits an event; prints its id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("type", help="event type, e.g. order.placed")
        parser.add_argument("--data", default="{}", help="the payload, a JSON object")
        parser.add_argument("--idempotency-key", default=None, help="a repeated emit with this key starts nothing new")
        parser.add_argument("--priority", choices=["urgent"], default=None,
                            help="urgent: the runs' stage messages overtake queued normal ones")

    def handle(self, *args, **options):
        try:
            payload = json.loads(options["data"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--data is not valid JSON: {exc}", returncode=2) from None
        try:
            event_id = emit(options["type"], payload, idempotency_key=options["idempotency_key"], source="cli",
                            priority=options["priority"])
        except EventError as exc:
            raise CommandError(str(exc), returncode=2) from None
        self.stdout.write(event_id)
