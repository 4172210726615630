"""Where the metrics endpoints listen and keep their files: environment only (a worker's
exposition process has no Django), each read through `pipeline.conf`."""
from __future__ import annotations

from pathlib import Path

from .. import conf

# The project's var/ folder when PIPELINE_VAR_DIR is not set (as before the package split: beside the source).
_PROJECT_VAR = Path(__file__).resolve().parent.parent.parent / "var"


def worker_port() -> int | None:
    return conf.environment("PIPELINE_WORKER_METRICS_PORT")


def scheduler_port() -> int | None:
    return conf.environment("PIPELINE_SCHEDULER_METRICS_PORT")


def bind_address() -> str:
    return conf.environment("PIPELINE_METRICS_ADDR")


def metrics_base_dir() -> Path:
    if conf.environment("PIPELINE_METRICS_DIR"):
        return Path(conf.environment("PIPELINE_METRICS_DIR"))
    return Path(conf.environment("PIPELINE_VAR_DIR") or _PROJECT_VAR) / "prometheus"
