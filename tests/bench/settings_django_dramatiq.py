"""A django_dramatiq worker of the same Django project as ours (tests.bench.settings: the
project's apps, the bench pipelines), with django_dramatiq's middleware instead of ours:
`AdminMiddleware` keeps a `Task` row per message in the project's database (DATABASE_URL, a
SQLite file of its own with the same options as ours), plus the Pipelines middleware that chains
the three actors of `tests.bench.djdramatiq`. Left out of django_dramatiq's default list:
Prometheus (an HTTP exposition server per worker), as ours runs without its metrics endpoint."""
from tests.bench.settings import *  # noqa: F401,F403
from tests.bench.settings import DRAMATIQ_BROKER, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.bench.djdramatiq"]
DRAMATIQ_BROKER = {
    **DRAMATIQ_BROKER,
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Pipelines",
        "dramatiq.middleware.Retries",
        "tests.bench.djdramatiq.middleware.DoneSignal",  # after_* hooks run in reverse: after AdminMiddleware's
        "django_dramatiq.middleware.AdminMiddleware",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
    ],
}
