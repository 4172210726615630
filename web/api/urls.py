from django.urls import path

from . import views

urlpatterns = [
    path("events", views.post_event, name="api-events"),
    path("events/<str:event_id>", views.get_event, name="api-event"),
    path("runs/<str:run_id>", views.get_run, name="api-run"),
    path("runs/<str:run_id>/replay", views.replay_run, name="api-run-replay"),
    path("runs/<str:run_id>/cancel", views.cancel_run, name="api-run-cancel"),
]
