"""Pause, resume and cancel a memo that is sending.

A paused or cancelled memo's deliveries cannot be claimed (the claim checks the memo's
status in the same UPDATE), so workers stop after the send call they are in (one email,
or with a batching backend one call of up to 1,000). Resume
re-enqueues what is still queued; cancel gives every queued delivery its final status.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from memo_service.memos.audit import audit_record
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.queue import enqueue_on_commit
from memo_service.memos.send.dispatch import send_batches_enqueue

S = Memo.Status
CANCELLABLE = [S.DRAFT, S.AWAITING_APPROVAL, S.APPROVED, S.SCHEDULED, S.SENDING, S.PAUSED]


class ControlRefused(Exception):
    pass


def memo_pause(*, memo: Memo, by: Any, reason: str = "paused by an admin") -> None:
    if not Memo.objects.filter(pk=memo.pk, status=S.SENDING).update(status=S.PAUSED, pause_reason=reason[:300]):
        raise ControlRefused(f"memo {memo.slug} is not sending")
    audit_record(actor=by, action="memo.paused", obj=memo, reason=reason)


def memo_resume(*, memo: Memo, by: Any) -> int:
    """Continue where it stopped; returns how many queued deliveries were enqueued again."""
    with transaction.atomic():
        if not Memo.objects.filter(pk=memo.pk, status=S.PAUSED).update(status=S.SENDING, pause_reason=""):
            raise ControlRefused(f"memo {memo.slug} is not paused")
        audit_record(actor=by, action="memo.resumed", obj=memo)
        memo.refresh_from_db()
        if memo.dispatched_at is None:
            enqueue_on_commit("memos.dispatch_memo", memo.pk)
        queued = list(
            Delivery.objects.filter(memo=memo, status=Delivery.Status.QUEUED)
            .order_by("id")
            .values_list("id", flat=True)
        )
        send_batches_enqueue(queued)
    return len(queued)


def memo_cancel(*, memo: Memo, by: Any) -> int:
    """Stop for good: queued deliveries end as cancelled (those already handed to the
    provider keep their status). Returns how many deliveries were cancelled."""
    with transaction.atomic():
        if not Memo.objects.filter(pk=memo.pk, status__in=CANCELLABLE).update(status=S.CANCELLED, scheduled_at=None):
            raise ControlRefused(f"memo {memo.slug} can no longer be cancelled")
        cancelled = Delivery.objects.filter(memo=memo, status=Delivery.Status.QUEUED).update(
            status=Delivery.Status.CANCELLED,
            last_error="not sent: the memo was cancelled",
            status_changed_at=timezone.now(),
        )
        audit_record(actor=by, action="memo.cancelled", obj=memo, deliveries_cancelled=cancelled)
    return cancelled
