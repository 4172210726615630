"""The project's URLs without the demo shop's."""
from django.urls import URLResolver

from web.urls import urlpatterns as _project

urlpatterns = [p for p in _project if not (isinstance(p, URLResolver) and p.urlconf_name == "web.shop.urls")]
