"""An email to one person outside a memo's send: a reply to a case, a dispute's outcome,
a withdrawal notice, a receipt, a request for review (memos/notify/)."""

from django.conf import settings
from django.db import models

from memo_service.developers.models import Developer
from memo_service.memos.models.memo import Memo


class Notification(models.Model):
    """Its text is rendered when it is made (in the recipient's language) and kept, with
    its hash, so what was said is on record; the address is read from the recipient's row
    when it is sent, never stored here."""

    class Kind(models.TextChoices):
        CASE_REPLY = "case_reply", "reply to a case"
        DISPUTE_OUTCOME = "dispute_outcome", "a dispute's outcome"
        WITHDRAWAL = "withdrawal", "withdrawal notice"
        RECEIPT = "receipt", "receipt of an answer"
        REVIEW_REQUESTED = "review_requested", "a memo awaits approval"
        CHANGES_REQUESTED = "changes_requested", "changes requested"
        APPROVED = "approved", "memo approved"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    memo = models.ForeignKey(Memo, on_delete=models.PROTECT, related_name="notifications")
    # Exactly one of them: a developer, or a member of staff.
    developer = models.ForeignKey(
        Developer, null=True, blank=True, on_delete=models.PROTECT, related_name="notifications"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    language = models.CharField(max_length=10, blank=True)
    subject = models.CharField(max_length=300)
    text = models.TextField()
    # SHA-256 of subject and text, as notify/notifications.py hashes them.
    text_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    provider_message_id = models.CharField(max_length=255, blank=True)
    status_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(developer__isnull=True) ^ models.Q(user__isnull=True),
                name="notification_one_recipient",
            )
        ]
        indexes = [models.Index(fields=["status", "id"], name="memos_notification_queue")]
