from django.apps import apps
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("web.routes")),  # the API, the dashboard, the probes: what a user's project mounts too
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
]
if apps.is_installed("web.shop"):  # the demo shop: remove it from INSTALLED_APPS and its URLs go too
    urlpatterns.append(path("shop/", include("web.shop.urls")))
