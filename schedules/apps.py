from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from .registry import validate_targets


class SchedulesConfig(AppConfig):
    name = "schedules"
    verbose_name = "Schedules"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        autodiscover_modules("schedules")
        validate_targets()
