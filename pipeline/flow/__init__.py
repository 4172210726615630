"""Flow control declared on pipelines: how many runs may be in progress at once (per key, in
all), and singletons. Waiting runs are rows in the run store, not threads; the database is the
arbiter across every worker process and host (see `pipeline.flow.slots`).

Importable before Django's app registry is ready (declarations happen at import time): the
modules that touch the run store are imported where they are used."""
from .concurrency import Concurrency
from .keys import GLOBAL_KEY, check_key, key_of
from .singleton import Singleton

__all__ = ["Concurrency", "Singleton", "check_key", "key_of", "GLOBAL_KEY"]
