"""Every `PIPELINE_*` setting is read through `pipeline.conf`, and the README's settings table
shows exactly the settings and defaults of conf's table."""
import re
from pathlib import Path

import pytest

from pipeline import conf

# Pure logic (no run store): run once, in the SQLite pass of `make test`.
pytestmark = pytest.mark.store_independent

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| `(PIPELINE_[A-Z_]+)` \| ([^|]*) \|")


def readme_settings() -> dict[str, str]:
    """The README table's PIPELINE_* rows: name -> the default as shown (its first `code`, else '')."""
    section = ROOT.joinpath("README.md").read_text().split("## Processes and settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            shown = re.search(r"`([^`]*)`", match.group(2))
            rows[match.group(1)] = shown.group(1) if shown else ""
    return rows


def test_the_readme_table_shows_every_setting_of_conf_and_nothing_else():
    assert readme_settings() == {setting.name: setting.shown for setting in conf.SETTINGS}


def test_each_setting_has_a_meaning_and_a_known_source():
    for setting in conf.SETTINGS:
        assert setting.doc and setting.source in ("setting", "environment", "setting, environment"), setting.name


def test_the_shown_default_is_the_default():
    for setting in conf.SETTINGS:
        if setting.default not in (None, "") and setting.name != "PIPELINE_INLINE_CHAINS":
            assert setting.shown == str(setting.default), setting.name


# The project's settings module defines the settings (from the environment); nothing else reads them by hand.
BY_HAND = re.compile(r"""getattr\(settings,\s*["']PIPELINE_|environ(?:\.get)?[\[(]\s*["']PIPELINE_""")


def test_no_setting_is_read_past_conf():
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for package in ("pipeline", "schedules", "web")
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts and path != ROOT / "web" / "settings.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if BY_HAND.search(line)
    ]
    assert hits == []


def test_every_setting_the_code_asks_conf_for_is_in_its_table():
    asked = {
        name
        for package in ("pipeline", "schedules", "web")
        for path in (ROOT / package).rglob("*.py")
        for name in re.findall(r"""conf\.(?:get|environment)\(\s*["'](\w+)["']""", path.read_text())
    }
    assert asked and asked <= set(conf.TABLE)


@pytest.mark.parametrize(("name", "raw", "expected"), [
    ("PIPELINE_WORKER_METRICS_PORT", "9191", 9191),
    ("PIPELINE_WORKER_METRICS_PORT", "0", None),
    ("PIPELINE_METRICS_ADDR", "0.0.0.0", "0.0.0.0"),
    ("PIPELINE_LOG_FORMAT", "json", "json"),
])
def test_an_environment_setting_is_read_from_the_environment(monkeypatch, name, raw, expected):
    monkeypatch.setenv(name, raw)
    assert conf.get(name) == expected


def test_an_unset_environment_setting_is_its_default(monkeypatch):
    monkeypatch.delenv("PIPELINE_METRICS_ADDR", raising=False)
    assert conf.get("PIPELINE_METRICS_ADDR") == "127.0.0.1"


def test_a_django_setting_wins_over_the_environment(monkeypatch, settings):
    monkeypatch.setenv("PIPELINE_SSE_MAX_STREAMS", "7")
    assert conf.get("PIPELINE_SSE_MAX_STREAMS") == "7"
    settings.PIPELINE_SSE_MAX_STREAMS = 9
    assert conf.get("PIPELINE_SSE_MAX_STREAMS") == 9
