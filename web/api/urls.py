from django.urls import include, path, register_converter
from django.views.decorators.http import require_http_methods

from web.webhooks import api as webhooks

from . import live, schedules, views
from .openapi import WEBHOOK_ID_MAX


class _WebhookId:
    """1 to 18 digits: a longer number cannot be a row id (and would overflow the lookup)."""

    regex = "[0-9]{1,%d}" % len(str(WEBHOOK_ID_MAX))

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(_WebhookId, "webhook_id")

# What may be done to one run, below runs/<run_id>/.
_RUN_ACTIONS = [
    path("events", require_http_methods(["GET"])(live.api_run_events_view), name="api-run-events"),
    path("replay", views.replay_run, name="api-run-replay"),
    path("cancel", views.cancel_run, name="api-run-cancel"),
]

urlpatterns = [
    path("runs", views.list_runs, name="api-runs"),
    path("runs/<str:run_id>", views.get_run, name="api-run"),
    path("runs/<str:run_id>/", include(_RUN_ACTIONS)),
    path("events", views.post_event, name="api-events"),
    path("events/<str:event_id>", views.get_event, name="api-event"),
    path("webhooks", webhooks.webhooks_collection, name="api-webhooks"),
    path("webhooks/<webhook_id:webhook_id>", webhooks.webhook_item, name="api-webhook"),
    path("schedules", schedules.schedules_collection, name="api-schedules"),
    path("schedules/<str:name>", schedules.schedule_item, name="api-schedule"),
    path("schedules/<str:name>/<str:action>", schedules.schedule_action, name="api-schedule-action"),
    path("openapi.json", views.openapi_schema, name="api-openapi"),
]
