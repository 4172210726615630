"""The documentation site builds with no warning (`make docs` = `mkdocs build --strict`): every
page, every README section it includes, every link and every reference generated from the
docstrings resolves."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.store_independent  # reads files only: run once, in the SQLite pass


def test_the_docs_build_with_no_warning(tmp_path: Path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists() and shutil.which("mkdocs") is None:
        pytest.skip("mkdocs is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    result = subprocess.run(
        [str(mkdocs) if mkdocs.exists() else "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    for name in ("pipeline.Pipeline", "pipeline.emit", "pipeline.project.pipeline_settings", "schedules.every"):
        assert f'id="{name}"' in reference, name
    assert 'id="schedules.registry.cron"' in reference  # the function (schedules.cron is also a module's name)
