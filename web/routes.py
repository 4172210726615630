"""The JSON API, the dashboard and the probes, for a project to mount under a prefix of its choice:

    path("pipelines/", include("web.routes"))

gives `/pipelines/api/…` (its OpenAPI document at `/pipelines/api/openapi.json`, whose `servers`
entry says where it is mounted), `/pipelines/dashboard/…` and `/pipelines/healthz`, `readyz`,
`metrics`. Nothing in the API or the dashboard assumes a prefix: links are reversed, and the JSON
error middleware finds the API where it is mounted. This repository's own project mounts it at
the root (`web/urls.py`)."""
from django.urls import include, path

from web import health

urlpatterns = [
    path("healthz", health.healthz, name="pipeline-healthz"),
    path("readyz", health.readyz, name="pipeline-readyz"),
    path("metrics", health.metrics, name="pipeline-metrics"),
    path("api/", include("web.api.urls")),
    path("dashboard/", include("web.dashboard.urls")),
]
