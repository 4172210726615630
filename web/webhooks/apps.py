from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "web.webhooks"
    label = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top (Django's app loading): fanout and the engine's outcomes import the
        # models, which Django loads only once every app's AppConfig module is imported.
        from pipeline import add_outcome_listener, add_outcome_observer

        from . import fanout

        add_outcome_listener(fanout.wants)
        add_outcome_observer(fanout.deliveries_for)
