from django.urls import path

from web.shop import live
from web.webhooks import api as webhooks

from . import schedules, views

urlpatterns = [
    path("events", views.post_event, name="api-events"),
    path("events/<str:event_id>", views.get_event, name="api-event"),
    path("runs", views.list_runs, name="api-runs"),
    path("openapi.json", views.openapi_schema, name="api-openapi"),
    path("runs/<str:run_id>", views.get_run, name="api-run"),
    path("runs/<str:run_id>/events", live.api_run_events_view, name="api-run-events"),
    path("runs/<str:run_id>/replay", views.replay_run, name="api-run-replay"),
    path("runs/<str:run_id>/cancel", views.cancel_run, name="api-run-cancel"),
    path("webhooks", webhooks.webhooks_collection, name="api-webhooks"),
    path("webhooks/<int:webhook_id>", webhooks.webhook_item, name="api-webhook"),
    path("schedules", schedules.schedules_collection, name="api-schedules"),
    path("schedules/<str:name>", schedules.schedule_item, name="api-schedule"),
    path("schedules/<str:name>/<str:action>", schedules.schedule_action, name="api-schedule-action"),
]
