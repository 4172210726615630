"""The public API passes `mypy --strict` (the files and options are `[tool.mypy]` in pyproject.toml),
and a user's typed pipeline (tests/typed_user_code/typed_pipeline.py) type-checks against it."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.store_independent  # no run store: once, in the SQLite pass

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_the_public_api_passes_mypy_strict():
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_a_typed_stage_that_misreads_its_event_data_is_a_type_error(tmp_path):
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "from pydantic import BaseModel\nfrom pipeline import StageContext\n\n"
        "class Placed(BaseModel):\n    amount_cents: int\n\n"
        "def stage(ctx: StageContext[Placed]) -> str:\n    return ctx.event.data.amount_cents\n"
    )
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                             "--cache-dir", str(ROOT / "var" / "mypy-cache"), str(wrong)],
                            cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 1 and 'Incompatible return value type (got "int", expected "str")' in result.stdout
