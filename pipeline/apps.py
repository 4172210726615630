from django.apps import AppConfig


class PipelineConfig(AppConfig):
    name = "pipeline"
    verbose_name = "Pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Every app's pipelines.py is imported at start-up, in every process, the way
        # django-dramatiq finds tasks.py: the web process needs them to start runs, workers to run them.
        from django.utils.module_loading import autodiscover_modules

        from . import conf, outcomes  # noqa: F401  (outcomes registers the run.* outcome event schemas)
        from .definitions import registry

        conf.get("PIPELINE_INLINE_CHAINS")  # a bad value stops every process at start, not each message
        autodiscover_modules("pipelines")
        registry.validate()
