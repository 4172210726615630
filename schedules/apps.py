from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class SchedulesConfig(AppConfig):
    name = "schedules"
    verbose_name = "Schedules"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Not at the top: the registry imports the engine, which Django imports app by app.
        from .registry import validate_targets

        autodiscover_modules("schedules")
        validate_targets()
