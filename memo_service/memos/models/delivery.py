"""Sending: one Delivery per email, what the provider told us of it, and the send's own
machinery (the rate limiter's shared state, the worker's lease on its deliveries)."""

from django.db import models

from memo_service.developers.models import Developer
from memo_service.memos.models.memo import Memo


class Delivery(models.Model):
    """One email of one memo to one developer, and what became of it."""

    class Kind(models.TextChoices):
        INITIAL = "initial", "initial"
        REMINDER = "reminder", "reminder"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        DELIVERED = "delivered", "delivered"
        BOUNCED = "bounced", "bounced"
        COMPLAINED = "complained", "complained"
        FAILED = "failed", "failed"
        OUTCOME_UNKNOWN = "outcome_unknown", "outcome unknown"
        SKIPPED = "skipped", "skipped"  # a reminder not sent: the developer answered first
        CANCELLED = "cancelled", "cancelled"  # not sent: the memo's send was cancelled

    # No index of its own: the (memo, status) index and the unique constraint start with
    # it. A send writes every row twice (claim, record), and each index costs each write.
    memo = models.ForeignKey(Memo, on_delete=models.PROTECT, related_name="deliveries", db_index=False)
    developer = models.ForeignKey(Developer, on_delete=models.PROTECT, related_name="deliveries")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.INITIAL)
    # 0 for the initial email; n for the memo's n-th reminder.
    sequence = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    language = models.CharField(max_length=10, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="The developer's country when the memo was sent.")
    reason = models.CharField(max_length=300, blank=True, help_text="Why this developer is in the cohort.")
    # Indexed in Meta: db_index would add PostgreSQL a second, LIKE-ready index nothing uses.
    provider_message_id = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # After a transient provider error: not to be tried again before this time.
    not_before = models.DateTimeField(null=True, blank=True)
    # Why it is in its status: the error of a send to be retried, a failure, a skip, a
    # cancellation, an outcome nobody can know; empty once the provider took it.
    status_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    # What the email said, kept so the developer's page shows exactly that text: the
    # developer's values the templates were rendered with (a sent memo's templates never
    # change), and the SHA-256 of the email as sent (subject, text and HTML), written
    # with the send. None and "" for an email whose text nobody kept (the provider
    # reported taking it after its worker died: reconcile.py). Erasure blanks the values;
    # the hash, in the evidence chain too, stays. On the row, not a table of its own, so
    # the send's record stays one UPDATE per call.
    rendered_with = models.JSONField(null=True, blank=True, editable=False)
    text_hash = models.CharField(max_length=64, blank=True, default="", db_default="", editable=False)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["memo", "developer", "kind", "sequence"], name="one_delivery_per_memo_developer_kind"
            )
        ]
        indexes = [
            models.Index(fields=["memo", "status"]),
            models.Index(fields=["provider_message_id"], name="memos_delivery_message_id"),  # tracking events
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.status})"


# The sets of delivery statuses the code asks about, each named once (delivery_status.py
# writes the status itself).
_Status = Delivery.Status
DELIVERY_PENDING = (_Status.QUEUED, _Status.SENDING)  # not yet settled with the provider
DELIVERY_HANDED_OVER = (_Status.SENT, _Status.DELIVERED, _Status.BOUNCED, _Status.COMPLAINED)  # the provider took it
DELIVERY_ARRIVED = (_Status.DELIVERED, _Status.COMPLAINED)  # in the developer's mailbox
DELIVERY_UNCONFIRMED = (_Status.FAILED, _Status.OUTCOME_UNKNOWN)  # a send that ended without a handover we know of
# How far along a delivery is; a tracking event only ever moves it to a higher rank, so
# a late or replayed "delivered" cannot undo a "bounced".
DELIVERY_RANK = {
    _Status.QUEUED: 0,
    _Status.SENDING: 1,
    _Status.OUTCOME_UNKNOWN: 1,
    _Status.SENT: 2,
    _Status.FAILED: 3,
    _Status.DELIVERED: 4,
    _Status.BOUNCED: 5,
    _Status.COMPLAINED: 6,
}


class DeliveryEvent(models.Model):
    """A tracking event the provider posted to our webhook, kept as it came."""

    provider = models.CharField(max_length=30)
    event_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=30)
    delivery = models.ForeignKey(Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    message_id = models.CharField(max_length=255, blank=True)
    description = models.TextField(blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField(default=dict)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "event_id"], name="one_event_per_provider_id")]


class ProviderThrottle(models.Model):
    """The send rate limiter's shared state when the broker is not Redis (see throttle.py)."""

    provider = models.CharField(max_length=100, primary_key=True)
    next_slot = models.FloatField(default=0.0)  # unix time of the next free send slot
    blocked_until = models.FloatField(default=0.0)  # unix time a Retry-After asked us to wait for


class SendLease(models.Model):
    """A send task's claim on its deliveries: who holds them and until when.

    A worker process takes one when a send task starts and renews it while the task runs
    (memos/send/leases.py); a lease that was not renewed in time belongs to a process that is
    gone, and beat's sweeper hands its deliveries to reconciliation (memos/send/reconcile.py).
    """

    holder = models.CharField(max_length=200, help_text="host:pid of the worker process holding it.")
    memo = models.ForeignKey(Memo, on_delete=models.CASCADE, related_name="+")
    # The task's delivery ids: one row per task, not a write per delivery.
    delivery_ids = models.JSONField(default=list)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    # The dead holder's last sign of life, kept when reconciliation takes the lease over.
    last_renewed_at = models.DateTimeField()
    # Why it is being reconciled (blank while its first holder works).
    note = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"lease {self.pk} ({self.holder})"
