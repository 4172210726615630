"""Where the metrics endpoints listen and keep their files, each read through `pipeline.conf`: the
ports and the address from the environment only (the scheduler reads them before its first log
line), the workers' folder as a setting (it is chosen in a worker process, Django set up)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .. import conf


def worker_port() -> int | None:
    return conf.environment("PIPELINE_WORKER_METRICS_PORT")


def scheduler_port() -> int | None:
    return conf.environment("PIPELINE_SCHEDULER_METRICS_PORT")


def bind_address() -> str:
    return conf.environment("PIPELINE_METRICS_ADDR")


def metrics_base_dir() -> Path:
    """`PIPELINE_METRICS_DIR`; else `<PIPELINE_VAR_DIR>/prometheus`; else a folder of this user's in
    the system's temporary folder. Never beside the source: an installed engine's folder may not
    be writable, and two projects would share one."""
    chosen = conf.get("PIPELINE_METRICS_DIR")
    if chosen:
        return Path(chosen)
    var = conf.environment("PIPELINE_VAR_DIR")
    if var:
        return Path(var) / "prometheus"
    return Path(tempfile.gettempdir()) / f"pipeline-metrics-{os.getuid()}"
