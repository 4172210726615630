from django.db import models


class SideEffect(models.Model):
    """One row each time a test stage's body runs: how tests count executions."""

    run_id = models.CharField(max_length=64)
    stage = models.CharField(max_length=100)
    attempt = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)


class Switch(models.Model):
    """A named flag tests flip to break or fix a stage from outside the worker."""

    name = models.CharField(max_length=100, unique=True)
