"""A user's project URLconf: the admin, and the API + dashboard mounted under a prefix of its own
choice (`tests/test_packaging.py` checks that everything follows the prefix)."""
from django.contrib import admin
from django.urls import include, path

PREFIX = "ops/pipelines/"

urlpatterns = [
    path("admin/", admin.site.urls),
    path(PREFIX, include("web.routes")),
]
