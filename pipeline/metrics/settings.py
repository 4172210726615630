"""Where the metrics endpoints listen and keep their files: environment only (a worker's
exposition process has no Django), each read through `pipeline.conf`."""
from __future__ import annotations

from pathlib import Path

from .. import conf

# `var` in the working directory when PIPELINE_VAR_DIR is not set, like PIPELINE_LOG_DIR's `var/log`
# (not a folder beside the source: installed from a wheel, that would be inside site-packages).
_DEFAULT_VAR = "var"


def worker_port() -> int | None:
    return conf.environment("PIPELINE_WORKER_METRICS_PORT")


def scheduler_port() -> int | None:
    return conf.environment("PIPELINE_SCHEDULER_METRICS_PORT")


def bind_address() -> str:
    return conf.environment("PIPELINE_METRICS_ADDR")


def metrics_base_dir() -> Path:
    if conf.environment("PIPELINE_METRICS_DIR"):
        return Path(conf.environment("PIPELINE_METRICS_DIR"))
    return Path(conf.environment("PIPELINE_VAR_DIR") or _DEFAULT_VAR) / "prometheus"
