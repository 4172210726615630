from django.apps import apps
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from web import health

urlpatterns = [
    path("healthz", health.healthz), path("readyz", health.readyz), path("metrics", health.metrics),
    path("admin/", admin.site.urls),
    path("api/", include("web.api.urls")),
    path("dashboard/", include("web.dashboard.urls")),
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
]
if apps.is_installed("web.shop"):  # the demo shop: remove it from INSTALLED_APPS and its URLs go too
    urlpatterns.append(path("shop/", include("web.shop.urls")))
