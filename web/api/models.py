"""API tokens: only a hash is stored; the token itself is shown once, when it is made.

Each token has a scope, `read` (GET and HEAD requests only) or `write` (every request), and an
expiry date (PIPELINE_API_TOKEN_DAYS after it is made, 90 days unless set; empty: never, which
the admin must choose on purpose)."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.db import models
from django.utils import timezone

from pipeline import conf

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def default_expiry() -> datetime:
    return timezone.now() + timedelta(days=conf.get("PIPELINE_API_TOKEN_DAYS"))


class ApiToken(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "read-only (GET)"
        WRITE = "write", "read-write"

    name = models.CharField(max_length=100, unique=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=8, editable=False, help_text="first characters, to tell tokens apart")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    active = models.BooleanField(default=True)
    scope = models.CharField(max_length=5, choices=Scope.choices, default=Scope.WRITE,
                             help_text="read-only tokens may only GET; read-write tokens may also change things")
    expires_at = models.DateTimeField(null=True, blank=True, default=default_expiry,
                                      help_text="after this the token is refused; empty: never expires")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, name: str, scope: str = Scope.WRITE, expires_at: datetime | None = None) -> tuple["ApiToken", str]:
        """Creates (or replaces) the token called `name`; returns it with its secret value.
        `expires_at` defaults to PIPELINE_API_TOKEN_DAYS from now."""
        if scope not in cls.Scope.values:
            raise ValueError(f"scope must be one of {', '.join(cls.Scope.values)}, not {scope!r}")
        value = secrets.token_urlsafe(32)
        token, _ = cls.objects.update_or_create(
            name=name, defaults={"token_hash": hash_token(value), "prefix": value[:8], "active": True,
                                 "scope": scope, "expires_at": expires_at or default_expiry()},
        )
        return token, value

    @classmethod
    def find(cls, value: str) -> "ApiToken | None":
        """The token with this value, usable or not (see `refusal`)."""
        return cls.objects.filter(token_hash=hash_token(value)).first()

    @classmethod
    def authenticate(cls, value: str) -> "ApiToken | None":
        """The token with this value if it may be used at all (active, not expired)."""
        token = cls.find(value)
        return token if token is not None and token.refusal() is None else None

    def refusal(self, method: str = "GET") -> tuple[int, str] | None:
        """(HTTP status, reason) when this token may not make a `method` request, else None."""
        if not self.active:
            return 401, "invalid or inactive API token"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return 401, f"API token {self.name!r} expired at {self.expires_at.isoformat()}: ask for a new one"
        if self.scope != self.Scope.WRITE and method.upper() not in READ_METHODS:
            return 403, f"API token {self.name!r} is read-only: {method.upper()} needs a read-write token"
        return None
