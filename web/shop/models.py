import secrets

from django.db import models


def new_public_token() -> str:
    """The secret part of an order's public link: 128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


class Order(models.Model):
    class Status(models.TextChoices):
        PLACED = "placed"
        RESERVED = "reserved"
        CHARGED = "charged"
        FULFILLED = "fulfilled"
        FAILED = "failed"

    # The order's pages are public (no login), so they are reached by this token, never by the
    # sequential primary key: a link cannot be guessed from another one.
    public_token = models.CharField(max_length=32, unique=True, default=new_public_token, editable=False)
    customer_email = models.EmailField()
    items = models.JSONField()
    total_cents = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PLACED)
    # Why a failed order failed, in words for the customer (the run keeps the technical error).
    failure_reason = models.CharField(max_length=300, blank=True, default="")
    event_id = models.UUIDField(null=True, blank=True)
    payment_reference = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    FINAL = (Status.FULFILLED, Status.FAILED)

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"

    @property
    def masked_email(self) -> str:
        """`a***@example.com`: enough for its customer to recognise, nothing for anyone else."""
        local, _, domain = self.customer_email.partition("@")
        return f"{local[:1]}***@{domain}" if domain else "***"
