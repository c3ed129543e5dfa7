"""What happens after a developer answers: an answer that needs a person (help, a
dispute, an objection) is a case (memos/cases/), with its notes, replies and decisions."""

from django.conf import settings
from django.db import models

from memo_service.developers.models import Developer
from memo_service.memos.models.answer import Answer
from memo_service.memos.models.memo import Memo

# A case's outcome when a correction's case continues it (correction.cases_carry_over): a
# carried dispute is decided on the correction, and its decision is proven there.
CASE_CARRIED = "carried"


class Case(models.Model):
    """One answer that needs a person: its status, who owns it, and how it ended."""

    class Kind(models.TextChoices):
        HELP = "help", "help request"
        DISPUTE = "dispute", "dispute"
        OBJECTION = "objection", "objection"

    class Status(models.TextChoices):
        OPEN = "open", "open"
        WAITING = "waiting", "waiting for the developer"
        RESOLVED = "resolved", "resolved"

    memo = models.ForeignKey(Memo, on_delete=models.PROTECT, related_name="cases")
    developer = models.ForeignKey(Developer, on_delete=models.PROTECT, related_name="cases")
    # The answer that opened it; a case carried to a correction keeps the answer given
    # to the earlier memo (one case per answer and memo).
    answer = models.ForeignKey(Answer, on_delete=models.PROTECT, related_name="cases")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="cases"
    )
    # How it ended: a dispute's DisputeResolution.Outcome, or for help and objections a
    # short word ("answered", "noted", "withdrawn"); the rationale says why.
    outcome = models.CharField(max_length=20, blank=True)
    rationale = models.TextField(blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    # A case still open on a memo that a correction superseded is carried to the
    # correction: the new case names the one it continues.
    carried_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="carried_to")
    opened_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [models.UniqueConstraint(fields=["answer", "memo"], name="one_case_per_answer_and_memo")]
        indexes = [models.Index(fields=["status", "opened_at"], name="memos_case_queue")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"


class CaseEntry(models.Model):
    """A line in a case's history: an internal note, a reply emailed to the developer, a
    change of status or assignee, a decision. Appended, never changed."""

    class Kind(models.TextChoices):
        NOTE = "note", "internal note"
        REPLY = "reply", "reply to the developer"
        STATUS = "status", "status changed"
        ASSIGNED = "assigned", "assigned"
        DECISION = "decision", "decision"

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    text = models.TextField(blank=True)
    # A reply's or a decision's email to the developer.
    notification = models.OneToOneField(
        "memos.Notification", null=True, blank=True, on_delete=models.PROTECT, related_name="case_entry"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "case entries"
