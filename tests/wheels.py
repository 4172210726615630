"""The wheel `python -m build` makes of this repository, built once per source state: the sources
are copied to a scratch folder (the build leaves `build/` and egg-info behind, and must not race a
build in the working tree) and the wheel is kept under `var/wheel-cache/<hash of the sources>/`,
so the packaging tests and the from-nothing test share one build until the code changes."""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "README.md", "pipeline", "schedules", "web")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _files() -> list[Path]:
    found = []
    for name in SOURCES:
        path = ROOT / name
        found += [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return found


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in _files():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def built_wheel() -> Path:
    """The wheel of the current sources: from the cache, else built now (`python -m build --wheel`)."""
    cache = Path(os.environ.get("PIPELINE_VAR_DIR", ROOT / "var")) / "wheel-cache"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / source_hash()
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions at once build it once
        wheels = sorted(target.glob("*.whl"))
        if wheels:
            return wheels[0]
        with tempfile.TemporaryDirectory(prefix="wheel-src-") as scratch:
            for name in SOURCES:
                source = ROOT / name
                if source.is_dir():
                    shutil.copytree(source, Path(scratch) / name, ignore=_IGNORED)
                else:
                    shutil.copy2(source, Path(scratch) / name)
            out = Path(scratch) / "dist"
            result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), scratch],
                                    capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
            assert result.returncode == 0, f"python -m build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            (wheel,) = out.glob("*.whl")
            for old in cache.iterdir():  # keep the newest only
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
            target.mkdir()
            shutil.copy2(wheel, target / wheel.name)
        return target / wheel.name
