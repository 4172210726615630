from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from web import health

urlpatterns = [
    path("healthz", health.healthz), path("readyz", health.readyz), path("metrics", health.metrics),
    path("admin/", admin.site.urls),
    path("api/", include("web.api.urls")),
    path("shop/", include("web.shop.urls")),
    path("dashboard/", include("web.dashboard.urls")),
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
]
