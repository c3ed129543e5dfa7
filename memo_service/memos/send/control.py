"""Pause, resume and cancel a memo that is sending.

A paused or cancelled memo's deliveries cannot be claimed (the claim checks the memo's
status in the same UPDATE), so workers stop after the send call they are in (one email,
or with a batching backend one call of up to 1,000). Resume
re-enqueues what is still queued; cancel gives every queued delivery its final status.
"""

from __future__ import annotations

from django.db import transaction

from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.delivery_status import deliveries_cancel_queued
from memo_service.memos.memo_status import memo_mark_cancelled, memo_mark_paused, memo_mark_resumed
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.queue import enqueue_on_commit
from memo_service.memos.send.dispatch import send_batches_enqueue


class ControlRefused(Exception):
    pass


def memo_pause(*, memo: Memo, by: Actor, reason: str = "paused by an admin") -> None:
    if not memo_mark_paused(memo=memo, reason=reason):
        raise ControlRefused(f"memo {memo.slug} is not sending")
    audit_record(actor=by, action="memo.paused", obj=memo, reason=reason)


def memo_resume(*, memo: Memo, by: Actor) -> int:
    """Continue where it stopped; returns how many queued deliveries were enqueued again."""
    with transaction.atomic():
        if not memo_mark_resumed(memo=memo):
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


def memo_cancel(*, memo: Memo, by: Actor) -> int:
    """Stop for good: queued deliveries end as cancelled (those already handed to the
    provider keep their status). Returns how many deliveries were cancelled."""
    with transaction.atomic():
        if not memo_mark_cancelled(memo=memo):
            raise ControlRefused(f"memo {memo.slug} can no longer be cancelled")
        cancelled = deliveries_cancel_queued(memo=memo)
        audit_record(actor=by, action="memo.cancelled", obj=memo, deliveries_cancelled=cancelled)
    return cancelled
