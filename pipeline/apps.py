from django.apps import AppConfig
from django.conf import settings
from django.utils.module_loading import autodiscover_modules

from . import conf
from ._definitions import registry
from ._files import private_sqlite_file


class PipelineConfig(AppConfig):
    name = "pipeline"
    verbose_name = "Pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Every app's pipelines.py is imported at start-up, in every process, the way
        # django-dramatiq finds tasks.py: the web process needs them to start runs, workers to run them.
        # Imported here, not at the top (Django's app loading): these modules import the models,
        # which Django loads only after every app's package and AppConfig module is imported.
        from . import _outcomes as outcomes  # noqa: F401  (registers the run.* outcome event schemas)
        from . import _runtime as runtime

        registry.attach_runner(runtime.execute_stage)

        conf.get("PIPELINE_INLINE_CHAINS")  # a bad value stops every process at start, not each message
        _private_sqlite_files()
        autodiscover_modules("pipelines")
        registry.validate()


def _private_sqlite_files() -> None:
    """Each SQLite database file is created 0600 here, before the first connection would create it
    with the umask's mode; SQLite gives its -wal and -shm files the database file's mode."""
    for database in settings.DATABASES.values():
        if "sqlite" in database.get("ENGINE", "") and database.get("NAME"):
            private_sqlite_file(database["NAME"])
