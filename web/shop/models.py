from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        PLACED = "placed"
        RESERVED = "reserved"
        CHARGED = "charged"
        FULFILLED = "fulfilled"
        FAILED = "failed"

    customer_email = models.EmailField()
    items = models.JSONField()
    total_cents = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PLACED)
    event_id = models.UUIDField(null=True, blank=True)
    payment_reference = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"
