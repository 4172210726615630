"""The tiny Django project of the Celery + django-celery-results system: only the results app,
its database a SQLite file of its own (DATABASE_URL) with the same options as our run store's
(WAL, synchronous=NORMAL, IMMEDIATE transactions, a 30 s busy timeout, connections kept open)."""
import os

import dj_database_url

SECRET_KEY = "bench-celery-results"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_celery_results"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=600, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
