from django.urls import path

from . import views

app_name = "dashboard"

# What an operator reads (GET), by its name in the "dashboard" namespace: (route, view).
PAGES = {
    "overview": ("", views.overview),
    "runs": ("runs/", views.runs),
    "run": ("runs/<str:run_id>/", views.run_detail),
    "run-status": ("runs/<str:run_id>/status.json", views.run_status),
    "events": ("events/", views.events),
    "event": ("events/<str:event_id>/", views.event_detail),
    "failed": ("failed/", views.failed),
    "schedules": ("schedules/", views.schedules_page),
    "workers": ("workers/", views.workers_page),
}
# What an operator does (POST, then back to a page).
ACTIONS = {
    "run-replay": ("runs/<str:run_id>/replay", views.run_replay),
    "run-cancel": ("runs/<str:run_id>/cancel", views.run_cancel),
    "failed-replay": ("failed/replay", views.failed_replay),
    "schedule-action": ("schedules/<str:name>/<str:action>", views.schedule_action),
}

urlpatterns = [path(route, view, name=name) for name, (route, view) in {**PAGES, **ACTIONS}.items()]
