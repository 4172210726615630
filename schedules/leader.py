"""One leader among any number of schedulers: a lease row in the database, renewed every second
by its holder and taken over by another scheduler once it has expired (e.g. the leader was
killed). Fires stay unique across a change of leader through their idempotency keys."""
from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from .models import SchedulerLease

LEASE_NAME = "scheduler"


class Lease:
    def __init__(self, ttl_seconds: float = 5.0) -> None:
        self.ttl = timedelta(seconds=ttl_seconds)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.held = False

    def renew(self) -> bool:
        """Takes or keeps the lease; returns whether this scheduler leads now."""
        now = timezone.now()
        expires = now + self.ttl
        with transaction.atomic():
            updated = SchedulerLease.objects.filter(name=LEASE_NAME).filter(
                Q(holder=self.holder) | Q(expires_at__lt=now)
            ).update(holder=self.holder, expires_at=expires)
            if updated and not self.held:
                SchedulerLease.objects.filter(name=LEASE_NAME).update(acquired_at=now)
        if not updated:
            try:
                with transaction.atomic():
                    SchedulerLease.objects.create(name=LEASE_NAME, holder=self.holder, acquired_at=now,
                                                  expires_at=expires)
                updated = 1
            except IntegrityError:
                updated = 0
        self.held = bool(updated)
        return self.held

    def release(self) -> None:
        """Gives the lease up at once, so another scheduler takes over without waiting."""
        SchedulerLease.objects.filter(name=LEASE_NAME, holder=self.holder).update(expires_at=timezone.now())
        self.held = False
