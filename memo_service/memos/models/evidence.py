"""The memo's evidence chain and its signed checkpoints (memos/evidence/)."""

from django.db import models
from django.utils import timezone

from memo_service.memos.models.memo import Memo


class EvidenceRecord(models.Model):
    """The memo's append-only evidence chain: its approval (the approved text, rules and
    approvers: the chain's first record), each answer, provider event, handover to the
    provider (a record per call, listing its emails) and later change of an email's
    status, with a hash that covers the record and the one before it.

    The writer inserts a record pending (seq empty) with its tag (evidence/tags.py); one
    sequencer per memo (evidence.evidence_seal) later gives the pending records whose
    tag holds their place in the chain, and marks the others refused, never chained."""

    class Kind(models.TextChoices):
        APPROVAL = "approval", "approval of the memo's text"
        ANSWER = "answer", "answer"
        EVENT = "event", "delivery event"
        HANDOVER = "handover", "handover to the provider, one call"
        STATUS = "status", "delivery status change"
        CASE = "case", "a case's opening, reply, decision or resolution"
        WITHDRAWAL = "withdrawal", "withdrawal of the memo"
        NOTICE = "notice", "an email to one developer outside the send (a receipt, a withdrawal notice)"

    memo = models.ForeignKey(Memo, on_delete=models.PROTECT, related_name="evidence")
    seq = models.PositiveIntegerField(null=True, blank=True)  # null: pending, not chained yet
    kind = models.CharField(max_length=10, choices=Kind.choices)
    object_id = models.BigIntegerField()
    payload = models.JSONField(default=dict)
    # What the record weighs in a sequencer's step: the emails a handover lists, any
    # other record 1. Kept beside the payload so that a step can be measured out
    # without reading a thousand emails' payloads to use one.
    size = models.PositiveIntegerField(default=1, db_default=1)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)
    # Set by the writer, and covered by its tag: not the database's clock.
    created_at = models.DateTimeField(default=timezone.now)
    tag = models.CharField(max_length=80, blank=True, default="")  # evidence/tags.py
    # A pending record whose tag did not hold: the sequencer will not chain it, and
    # verification names it as not written by memo-service.
    refused = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["memo", "seq"], name="one_record_per_seq")]
        indexes = [
            # The sequencer's queue: a memo's pending records in the order they came.
            models.Index(fields=["memo", "id"], condition=models.Q(seq__isnull=True), name="memos_evidence_pending"),
        ]


class EvidenceCheckpoint(models.Model):
    """A signed statement of a memo's chain after a sealing step (CloudTrail's digest
    files, Certificate Transparency's signed tree heads): how many records, the head's
    hash, the previous checkpoint's body hash. Signed with EVIDENCE_SIGNING_KEY, which is
    not in the database: whoever can write the database cannot make a new one."""

    memo = models.ForeignKey(Memo, on_delete=models.PROTECT, related_name="checkpoints")
    seq = models.PositiveIntegerField()  # the last record it covers
    head_hash = models.CharField(max_length=64)
    count = models.PositiveIntegerField()
    prev = models.CharField(max_length=64)  # SHA-256 of the previous checkpoint's body
    at = models.DateTimeField()
    key_id = models.CharField(max_length=64)  # SHA-256 of the public key
    signature = models.CharField(max_length=100)  # base64 Ed25519 over the body

    class Meta:
        constraints = [models.UniqueConstraint(fields=["memo", "seq"], name="one_checkpoint_per_seq")]
