"""Settings for the benchmark's own workers and producer: the project's settings (everything a
user gets by default: run store, JSON log files, outbox, retries), plus the bench app whose no-op
pipeline is measured and the middleware that sends the done-signal once a run is recorded done.

DEBUG is off, as in any deployment (Django keeps every query in memory when it is on)."""
from web.settings import *  # noqa: F401,F403
from web.settings import DRAMATIQ_BROKER, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.bench.benchapp"]
DEBUG = False
SHOP_FAILURE_RATE = 0.0
DRAMATIQ_BROKER = {
    **DRAMATIQ_BROKER,
    "MIDDLEWARE": [*DRAMATIQ_BROKER["MIDDLEWARE"], "tests.bench.benchapp.middleware.DoneSignal"],
}
