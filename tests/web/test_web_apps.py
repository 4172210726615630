"""Each web app has one job: the demo shop can be removed (from INSTALLED_APPS, and so from the
URLconf) and the API and the dashboard work as before."""
import os
import subprocess

import pytest
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_THE_SHOP = ["tests/web/test_dashboard_views.py", "tests/web/test_api_tokens.py", "tests/web/test_openapi_contract.py"]


@pytest.mark.broker  # a real process (the slow tier)
# Its own SQLite database whatever the pass (DATABASE_URL is removed): once, in the SQLite pass.
@pytest.mark.store_independent
def test_the_api_and_dashboard_tests_pass_without_the_shop(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings_without_shop",
        # Its own folder (its own SQLite test database, keys and logs), not this run's...
        PIPELINE_VAR_DIR=str(tmp_path), PIPELINE_LOG_DIR=str(tmp_path / "log"),
        # ...and no broker: what it publishes must not reach the queues this run's workers consume
        # (these tests need none; an event whose publishing fails stays in the outbox).
        PIPELINE_BROKER_URL="amqp://guest:guest@127.0.0.1:9/%2F",
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ds=tests.settings_without_shop",
         *WITHOUT_THE_SHOP],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]
