from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "web.webhooks"
    label = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pipeline import outcomes

        from . import fanout

        outcomes.add_listener(fanout.wants)
        outcomes.add_observer(fanout.deliveries_for)
