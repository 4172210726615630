"""Where the metrics endpoints listen and keep their files, each read through `pipeline.conf`: the
ports and the address from the environment only (the scheduler reads them before its first log
line), the workers' folder as a setting (it is chosen in a worker process, Django set up)."""
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
    """`PIPELINE_METRICS_DIR` (this project's settings: `<var>/prometheus`); else
    `<PIPELINE_VAR_DIR or var>/prometheus`."""
    chosen = conf.get("PIPELINE_METRICS_DIR")
    if chosen:
        return Path(chosen)
    return Path(conf.environment("PIPELINE_VAR_DIR") or _DEFAULT_VAR) / "prometheus"
