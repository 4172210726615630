"""Each web app has one job: the demo shop can be removed (from INSTALLED_APPS and the URLconf)
and the API and the dashboard work as before."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WITHOUT_THE_SHOP = ["tests/test_dashboard_views.py", "tests/test_api_tokens.py", "tests/test_openapi_contract.py"]


def test_the_api_and_dashboard_tests_pass_without_the_shop():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings_without_shop"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ds=tests.settings_without_shop",
         "-W", "ignore::pytest.PytestAssertRewriteWarning", *WITHOUT_THE_SHOP],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "error" not in result.stdout.splitlines()[-1]
