"""`manage.py relay`: re-publish committed but unpublished events and stalled stages."""
import time

from django.core.management.base import BaseCommand, CommandParser

from pipeline import conf
from pipeline._publisher import relay_once


class Command(BaseCommand):
    help = "Runs the outbox relay (the scheduler runs it too); --once for a single pass."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true")

    def handle(self, *args, **options):
        while True:
            counts = relay_once()
            if options["once"]:
                self.stdout.write(f"republished {counts['events']} events, {counts['stages']} stages")
                return
            time.sleep(conf.get("PIPELINE_RELAY_INTERVAL_SECONDS"))
