"""django-dramatiq's `rundramatiq`, after checking that the broker answers and that its queues
have the type PIPELINE_QUEUE_TYPE asks for (one clear error line instead of every worker thread's
reconnect traceback), with our logging set-up in charge."""
import dramatiq
from django.core.management.base import CommandError
from django_dramatiq.management.commands.rundramatiq import Command as DjangoDramatiqCommand

from pipeline._broker import BrokerUnavailable, check_broker
from pipeline.rabbitmq import QueueTypeMismatch, check_queue_types


class Command(DjangoDramatiqCommand):
    def handle(self, *args, **options):
        try:
            check_broker()
        except BrokerUnavailable as exc:
            raise CommandError(str(exc)) from None
        try:  # before forking: one line, not a consumer restarting forever in every worker
            check_queue_types(dramatiq.get_broker(), options.get("queues") or None)
        except QueueTypeMismatch as exc:
            raise CommandError(str(exc)) from None
        # Our LOGGING_CONFIG sets up every worker process as Django starts in it; dramatiq's own
        # basicConfig would add a second, differently formatted handler.
        options["skip_logging"] = True
        return super().handle(*args, **options)
