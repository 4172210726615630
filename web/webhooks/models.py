"""Webhook subscriptions: where completion events (run.succeeded, run.failed, run.cancelled) are POSTed."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from .targets import url_problem, without_userinfo

EVENT_TYPES = ("run.succeeded", "run.failed", "run.cancelled")
MIN_SECRET_LENGTH = 16


def default_event_types() -> list[str]:
    return list(EVENT_TYPES)


def check_url(url: object) -> str | None:
    """What is wrong with a webhook URL, or None: its form, and the target policy (see targets.py)."""
    return url_problem(url)


def check_secret(secret) -> str | None:
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
        return f"secret must be a string of at least {MIN_SECRET_LENGTH} characters"
    if len(secret) > 256:
        return "secret must be at most 256 characters"
    if secret != secret.strip() or any(ord(c) < 32 for c in secret):
        return "secret must not contain control characters or surrounding spaces"
    return None


def _validate_url(value: str) -> None:
    problem = check_url(value)
    if problem:
        raise ValidationError(problem)


def _validate_secret(value: str) -> None:
    problem = check_secret(value)
    if problem:
        raise ValidationError(problem)


class WebhookSubscription(models.Model):
    name = models.CharField(max_length=200, unique=True)
    url = models.CharField(max_length=2000, validators=[_validate_url])
    secret = models.CharField(max_length=256, validators=[_validate_secret])
    # A subset of EVENT_TYPES; the pipelines whose outcomes are sent (empty: every pipeline's).
    event_types = models.JSONField(default=default_event_types)
    pipelines = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    max_consecutive_failures = models.PositiveIntegerField(default=5, validators=[MinValueValidator(1)])
    # Attempts per delivery (1 to 6): the delivery pipeline retries with backoff up to this many.
    max_attempts = models.PositiveIntegerField(default=6, validators=[MinValueValidator(1), MaxValueValidator(6)])
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"webhook {self.name} → {without_userinfo(self.url)}"

    def clean(self) -> None:
        bad = [t for t in self.event_types or [] if t not in EVENT_TYPES]
        if not self.event_types or bad:
            raise ValidationError({"event_types": f"event_types must be a non-empty subset of {', '.join(EVENT_TYPES)}"})

    def wants(self, event_type: str, pipeline: str) -> bool:
        return self.active and event_type in self.event_types and (not self.pipelines or pipeline in self.pipelines)
