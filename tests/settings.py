"""Settings for the test suite: the project's, plus pipelines and schedules made for the tests."""
import os as _os

# Under pytest-xdist (`make test-fast` runs on as many processes as there are cores), each worker
# process writes its log lines to a folder of its own: a test that reads the log files sees its own.
if _os.environ.get("PYTEST_XDIST_WORKER") and _os.environ.get("PIPELINE_LOG_DIR"):
    _os.environ["PIPELINE_LOG_DIR"] = f"{_os.environ['PIPELINE_LOG_DIR']}/{_os.environ['PYTEST_XDIST_WORKER']}"

from web.settings import *  # noqa: F401,F403
from web.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]
SHOP_FAILURE_RATE = 0.0
# The shop's web tests post orders and end while the session's worker still runs them; Django's
# TRUNCATE at the end of a transactional test locks the tables in no fixed order and can deadlock
# with a worker's run-end transaction, which flow control makes longer (it also hands the slot
# on). The flow-control tests (tests/pipeline/test_flow_*.py) wait for their runs instead.
SHOP_FULFILMENTS_PER_CUSTOMER = 0
PIPELINE_RELAY_AFTER_SECONDS = 1.0
PIPELINE_RELAY_INTERVAL_SECONDS = 1.0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The tests' webhook receivers listen on 127.0.0.1 (the worker they start reads this file too);
# the target policy's own tests turn it off again.
PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS = True

# The broker failover test lowers it so a stage whose publish was lost is re-published in seconds.
PIPELINE_STALLED_AFTER_SECONDS = float(_os.environ.get("TEST_STALLED_AFTER_SECONDS", "60"))

# The shared test workers say how many messages they hold (tests/in_hand.py), so that a test can
# wait for them to be idle before its data is flushed.
if _os.environ.get("TEST_IN_HAND_DIR"):
    DRAMATIQ_BROKER = {**DRAMATIQ_BROKER, "MIDDLEWARE": [*DRAMATIQ_BROKER["MIDDLEWARE"], "tests.in_hand.InHand"]}  # noqa: F405

# `make test-fast` keeps its SQLite test database apart from `make test`'s (var/test.sqlite3), so the
# two can run at the same time in one checkout without dropping each other's tables.
if _os.environ.get("TEST_SQLITE_NAME") and DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["TEST"] = {**DATABASES["default"].get("TEST", {}), "NAME": _os.environ["TEST_SQLITE_NAME"]}  # noqa: F405
