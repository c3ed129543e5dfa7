"""The platform's webhooks: its endpoints, the messages queued for them, each attempt."""

import secrets

from django.db import models


def webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class WebhookEndpoint(models.Model):
    """A URL of the platform's that is told about answers and passed deadlines."""

    class Event(models.TextChoices):
        ACKNOWLEDGED = "memo.acknowledged", "memo.acknowledged"
        DISPUTED = "memo.disputed", "memo.disputed"
        DEADLINE_PASSED = "memo.deadline_passed", "memo.deadline_passed"
        CHECKPOINT = "evidence.checkpoint", "evidence.checkpoint"

    url = models.URLField(max_length=500)
    secret = models.CharField(
        max_length=100,
        default=webhook_secret,
        help_text='Signs each request: X-Memo-Signature: t=<unix time>,v1=<HMAC-SHA256 of "t.body">.',
    )
    events = models.JSONField(
        default=list, help_text="Any of memo.acknowledged, memo.disputed, memo.deadline_passed, evidence.checkpoint."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url


class WebhookMessage(models.Model):
    """One event for one endpoint, retried until it is answered with 2xx or gives up."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        DELIVERED = "delivered", "delivered"
        FAILED = "failed", "failed"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="messages")
    event = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)


class WebhookAttempt(models.Model):
    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(auto_now_add=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
