"""The test settings without the demo shop: no `web.shop` app, no `/shop/` URLs (see tests/test_web_apps.py)."""
from tests.settings import *  # noqa: F401,F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "web.shop"]
ROOT_URLCONF = "tests.urls_without_shop"
