"""`manage.py workerhealth`: a worker probe for Kubernetes (exec), systemd or a shell.

Healthy (exit 0) when at least `--min-processes` worker processes of this host are alive: they
wrote their heartbeat (`pipeline.middleware.Heartbeat`, every PIPELINE_HEARTBEAT_SECONDS) within
`--max-age` seconds (default: PIPELINE_WORKER_OFFLINE_AFTER_SECONDS, the threshold the dashboard
shows workers offline by, `pipeline._liveness`) and have not stopped. A worker that hangs, or lost
its database, stops beating and the probe fails (exit 1, one line saying why). `--broker` also
requires the broker to answer (for a readiness probe; keep it out of liveness: a broker outage is
not cured by restarting workers, which reconnect by themselves). Exit 2: bad usage."""
from __future__ import annotations

import socket

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipeline._broker import check_broker
from pipeline.errors import BrokerUnavailable
from pipeline._liveness import live_workers, worker_offline_after


class Command(BaseCommand):
    help = "Exit 0 if this host's worker processes sent a heartbeat recently (a liveness probe); 1 if not."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=None, help="the worker host to check (default: this host's name)")
        parser.add_argument("--max-age", type=float, default=None,
                            help="seconds since the last heartbeat (default: PIPELINE_WORKER_OFFLINE_AFTER_SECONDS)")
        parser.add_argument("--min-processes", type=int, default=1,
                            help="how many worker processes must be alive (e.g. rundramatiq --processes)")
        parser.add_argument("--broker", action="store_true", help="also require the broker to accept a connection")

    def handle(self, *args, **options):
        host = options["host"] or socket.gethostname()
        max_age = options["max_age"] if options["max_age"] is not None else worker_offline_after()
        if max_age <= 0 or options["min_processes"] < 1:
            raise CommandError("--max-age must be > 0 and --min-processes >= 1", returncode=2)

        problems: list[str] = []
        try:
            fresh = live_workers(within=max_age).filter(host=host).count()
        except Exception as exc:
            raise CommandError(f"unhealthy: the database did not answer ({type(exc).__name__}: {exc})", returncode=1)

        if fresh < options["min_processes"]:
            problems.append(
                f"{fresh} worker process(es) on {host} sent a heartbeat in the last {max_age:g}s "
                f"(need {options['min_processes']})"
            )
        if options["broker"]:
            try:
                check_broker(timeout=3)
            except BrokerUnavailable as exc:
                problems.append(str(exc))
        if problems:
            raise CommandError("unhealthy: " + "; ".join(problems), returncode=1)
        self.stdout.write(f"healthy: {fresh} worker process(es) on {host} beating within {max_age:g}s")
