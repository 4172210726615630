"""API tokens: only a hash is stored; the token itself is shown once, when it is made."""
from __future__ import annotations

import hashlib
import secrets

from django.db import models


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    name = models.CharField(max_length=100, unique=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=8, editable=False, help_text="first characters, to tell tokens apart")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, name: str) -> tuple["ApiToken", str]:
        """Creates (or replaces) the token called `name`; returns it with its secret value."""
        value = secrets.token_urlsafe(32)
        token, _ = cls.objects.update_or_create(
            name=name, defaults={"token_hash": hash_token(value), "prefix": value[:8], "active": True}
        )
        return token, value

    @classmethod
    def authenticate(cls, value: str) -> "ApiToken | None":
        return cls.objects.filter(token_hash=hash_token(value), active=True).first()
