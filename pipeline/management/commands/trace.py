"""`manage.py trace ID`: a run's timeline from the log files of every process."""
import json
import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipeline import conf
from pipeline.errors import TraceUsageError
from pipeline._logfiles import ID_RE, follow_files, log_sources, scan
from pipeline._timeline import finished, render, timeline


class Command(BaseCommand):
    help = "Prints the timeline of a run, event or trace from JSON log files (default: the log directory)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", help="a run id, event id or trace id")
        parser.add_argument("paths", nargs="*", help="log files, directories or globs (.gz too); '-' for stdin")
        parser.add_argument("--json", action="store_true", help="print the timeline as JSON")
        parser.add_argument("--follow", action="store_true", help="watch until every run of it has ended")
        parser.add_argument("--timeout", type=float, default=600, help="--follow gives up after this many seconds")

    def handle(self, *args, **options):
        wanted = options["id"].strip().lower()
        if not ID_RE.match(wanted):
            raise CommandError(f"{options['id']!r} is not a run id, event id (UUID) or trace id (32 hex digits)",
                               returncode=2)
        try:
            sources = log_sources(options["paths"], conf.get("PIPELINE_LOG_DIR"))
        except TraceUsageError as exc:
            raise CommandError(str(exc), returncode=2) from None
        if options["follow"]:
            return self._follow(sources, wanted, options)
        try:
            result = scan(sources, wanted)
        except TraceUsageError as exc:
            raise CommandError(str(exc), returncode=2) from None
        if result.skipped:
            self.stderr.write(result.skipped_text())
        if not result.lines:
            skipped = f", {result.skipped} of them skipped" if result.skipped else ""
            raise CommandError(f"no log line mentions {wanted} ({result.read} lines in {result.files} file(s){skipped})",
                               returncode=1)
        self._print(timeline(result.lines), options["json"])

    def _print(self, data, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(data, indent=2, default=str))
        else:
            self.stdout.write(render(data), ending="")

    def _follow(self, sources, wanted, options) -> None:
        if "-" in sources:
            raise CommandError("--follow reads files, not stdin", returncode=2)
        deadline = time.monotonic() + options["timeout"]
        shown = 0
        data = None
        reported = 0
        for lines, counts in follow_files(sources, wanted):
            if counts.skipped > reported:
                self.stderr.write(counts.skipped_text())
                reported = counts.skipped
            if lines:
                data = timeline(lines)
                if not options["json"]:
                    for line in lines[shown:]:
                        self.stdout.write(f"{line.get('timestamp')} {line.get('event'):<18} "
                                          f"{line.get('stage') or line.get('pipeline') or ''} "
                                          f"#{line.get('attempt', '')} {line.get('error', '')}".rstrip())
                shown = len(lines)
                if finished(data):
                    break
            if time.monotonic() > deadline:
                raise CommandError(f"gave up after {options['timeout']:.0f} s: the run has not ended", returncode=1)
            time.sleep(0.5)
        if data is not None:
            self._print(data, options["json"])
