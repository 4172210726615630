"""`manage.py replay RUN_ID` or `manage.py replay --pipeline NAME [--since ...] [--until ...]`."""
from datetime import datetime, timezone as dt_timezone

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from pipeline._definitions import registry
from pipeline._operations import OperationRefused, RunNotFound, failed_runs, replay


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"not an ISO 8601 date/time: {value!r}", returncode=2) from None
    return moment if moment.tzinfo else timezone.make_aware(moment, dt_timezone.utc)


class Command(BaseCommand):
    help = "Replays a failed run from its failed stage(s), or every failed run of a pipeline in a window."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", nargs="?", help="the run to replay")
        parser.add_argument("--from-start", action="store_true", help="start a new run of the same event instead")
        parser.add_argument("--pipeline", help="bulk: replay the failed runs of this pipeline")
        parser.add_argument("--since", help="bulk: runs created at or after this ISO time")
        parser.add_argument("--until", help="bulk: runs created before this ISO time")

    def handle(self, *args, **options):
        if bool(options["run_id"]) == bool(options["pipeline"]):
            raise CommandError("give either RUN_ID or --pipeline NAME", returncode=2)
        if options["run_id"]:
            try:
                new_id = replay(options["run_id"], from_start=options["from_start"])
            except RunNotFound as exc:
                raise CommandError(str(exc), returncode=1) from None
            except OperationRefused as exc:
                raise CommandError(str(exc), returncode=2) from None
            self.stdout.write(new_id)
            return
        if options["pipeline"] not in registry.pipelines:
            raise CommandError(f"unknown pipeline {options['pipeline']!r}", returncode=2)
        since = _moment(options["since"]) if options["since"] else None
        until = _moment(options["until"]) if options["until"] else None
        runs = list(failed_runs(options["pipeline"], since, until))
        replayed = refused = 0
        for run in tqdm(runs, desc=f"replaying {options['pipeline']}", unit="run", file=self.stderr._out):
            try:
                replay(str(run.id), from_start=options["from_start"])
                replayed += 1
            except OperationRefused:
                refused += 1  # changed state meanwhile (replayed by someone else)
        self.stdout.write(f"replayed {replayed} of {len(runs)} failed runs" + (f" ({refused} had changed state)" if refused else ""))
