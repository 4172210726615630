"""What we keep under var/ is the operator's alone: on a fresh var folder, the SQLite database and
its -wal/-shm, the log file, the secret key, the development password and token, the writer's lock
file and the metrics folders are created owner-only (files 0600, folders 0700) — with the mode
given at creation, whatever the umask, never chmod-ed afterwards."""
import json
import os
import stat
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = r"""
import json, os, sys
chmods = []
real_chmod = os.chmod
def recording_chmod(path, *args, **kwargs):
    chmods.append(str(path))
    return real_chmod(path, *args, **kwargs)
os.chmod = recording_chmod

import django
django.setup()
import structlog
from django.core.management import call_command
from django.db import connection

structlog.get_logger("tests.modes").info("modes.checked", customer_email="ada@example.com")
call_command("migrate", verbosity=0)
call_command("devsetup", stdout=open(os.devnull, "w"))
connection.ensure_connection()  # held open: the -wal and -shm files exist while a connection does

from pipeline.metrics import prepare_worker_metrics_dir
from pipeline._writer import GroupCommitWriter
writer = GroupCommitWriter()
writer._cross_process.acquire()
writer._cross_process.release()
prepare_worker_metrics_dir(os.getpid())

var = os.environ["PIPELINE_VAR_DIR"]
modes = {}
for folder, dirs, files in os.walk(var):
    for name in dirs + files:
        path = os.path.join(folder, name)
        modes[os.path.relpath(path, var)] = os.lstat(path).st_mode
print(json.dumps({"modes": modes, "chmods": [p for p in chmods if p.startswith(var)], "pid": os.getpid()}))
"""


@pytest.mark.broker  # a real process (the slow tier)
@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_everything_created_under_a_fresh_var_folder_is_owner_only(tmp_path, umask):
    var = tmp_path / "var"
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "web.settings", "PIPELINE_VAR_DIR": str(var),
           "PIPELINE_PROCESS": "modes", "PIPELINE_LOG_FORMAT": "none", "PIPELINE_METRICS_DIR": str(var / "prometheus"),
           "PIPELINE_BROKER_URL": os.environ.get("PIPELINE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, timeout=120,
                            preexec_fn=lambda: os.umask(umask))
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    report = json.loads(result.stdout.decode().strip().splitlines()[-1])
    modes = report["modes"]
    expected_files = {
        "db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm", "db.sqlite3-writer.lock", "secret-key",
        "dev-admin-password", "dev-api-token", "log/modes.jsonl", "prometheus/.lock",
        f"prometheus/worker-{report['pid']}/.master",
    }
    assert expected_files <= modes.keys()
    assert {"log", "prometheus", f"prometheus/worker-{report['pid']}"} <= modes.keys()
    loose = {}
    for path, mode in modes.items():
        if path == "static":  # the app's public CSS and JavaScript
            continue
        wanted = 0o700 if stat.S_ISDIR(mode) else 0o600
        if stat.S_IMODE(mode) != wanted:
            loose[path] = oct(stat.S_IMODE(mode))
    assert loose == {}
    assert report["chmods"] == []  # created with their mode: no window in which others could open them


def test_a_private_file_is_written_whole_and_owner_only_even_over_an_older_loose_one(tmp_path):
    from pipeline._files import create_private, write_private

    loose = tmp_path / "dev-api-token"
    loose.write_text("old\n")
    loose.chmod(0o644)
    write_private(loose, "new\n")  # replaced by a new file: 0600 from its first byte
    assert loose.read_text() == "new\n" and stat.S_IMODE(loose.stat().st_mode) == 0o600
    key = tmp_path / "deeper" / "secret-key"
    assert create_private(key, "first") is True
    assert create_private(key, "second") is False  # an existing key is never replaced
    assert key.read_text() == "first" and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deeper", "dev-api-token", "secret-key"]  # no leftovers
