"""The test settings without the demo shop (see tests/web/test_web_apps.py): no `web.shop` app, and so
no `/shop/` URLs (web/urls.py mounts them only when the app is installed)."""
from tests.settings import *  # noqa: F401,F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "web.shop"]
