from django.urls import path

from . import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("runs/", views.runs, name="runs"),
    path("runs/<str:run_id>/", views.run_detail, name="run"),
    path("runs/<str:run_id>/status.json", views.run_status, name="run-status"),
    path("runs/<str:run_id>/replay", views.run_replay, name="run-replay"),
    path("runs/<str:run_id>/cancel", views.run_cancel, name="run-cancel"),
    path("events/", views.events, name="events"),
    path("events/<str:event_id>/", views.event_detail, name="event"),
    path("failed/", views.failed, name="failed"),
    path("failed/replay", views.failed_replay, name="failed-replay"),
    path("schedules/", views.schedules_page, name="schedules"),
    path("schedules/<str:name>/<str:action>", views.schedule_action, name="schedule-action"),
    path("workers/", views.workers_page, name="workers"),
]
