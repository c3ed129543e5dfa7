"""Settle what a lost task or a dead worker left behind (run by beat every minute).

- A delivery still queued long after its batch was enqueued, of a memo whose send has
  made no progress for as long, lost its task (a broker flushed, a message dropped): it
  is enqueued again. Claims are guarded, so a late original task and the new one cannot
  both send it. (A million-recipient send has rows queued for many minutes while its
  tasks wait their turn; those are not lost, and are left alone.)
- A send task's lease (memos/send/leases.py) that its worker process stopped renewing (it
  died, with its machine or alone) is taken over and reconciled (memos/send/reconcile.py):
  its queued deliveries are enqueued again, and for those left `sending` the provider
  is asked what it accepted.
- A delivery left in `sending` under no lease (sent before leases existed) is given
  one past the hard time limit, and reconciled the same way.
- A memo whose dispatch was interrupted is dispatched again (it resumes).
- A withdrawn or cancelled memo's deliveries that a recovery put back in the queue (a
  dead worker's, reconciled; a retry after a transient failure) end cancelled, and a
  recently withdrawn memo's recipients whose email was recorded sent after the
  withdrawal (it was being sent) are told of it (withdrawal.py).
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from memo_service.memos.delivery_status import deliveries_cancel_queued
from memo_service.memos.models import MEMO_MAY_SEND, Delivery, Memo, SendLease
from memo_service.memos.queue import enqueue, enqueue_later
from memo_service.memos.send.dispatch import send_batch_size
from memo_service.memos.send.reconcile import GIVE_UP_AFTER, SWEEPER, leases_expired_take_over
from memo_service.memos.withdrawal import withdrawal_unnotified

DeliveryStatus = Delivery.Status
# A send moves some delivery on every few seconds; ten minutes without means its tasks are gone.
QUEUED_GRACE = dt.timedelta(minutes=10)
# Past the hard time limit no worker can still be sending it.
SENDING_GRACE = dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
# A dispatch task pages through even a million developers in a few minutes.
DISPATCH_GRACE = dt.timedelta(minutes=30)
# An email being sent at the withdrawal is recorded sent by its call, or by the
# reconciliation of its dead worker's lease, which gives up a day after it began.
WITHDRAWN_WATCH = GIVE_UP_AFTER + SENDING_GRACE + dt.timedelta(hours=1)


def deliveries_sweep() -> dict[str, int]:
    now = timezone.now()
    abandoned = deliveries_stuck_lease(now=now)
    leases = leases_recover()
    requeued = 0
    last_id = 0
    # Read once: as a subquery per queued row it would cost queued rows × sent rows.
    progressing = set(
        Delivery.objects.filter(sent_at__gte=now - QUEUED_GRACE).values_list("memo_id", flat=True).distinct()
    )
    lost = (
        Delivery.objects.filter(
            status=DeliveryStatus.QUEUED,
            created_at__lt=now - QUEUED_GRACE,
            memo__status__in=MEMO_MAY_SEND,
        )
        .filter(Q(not_before__isnull=True) | Q(not_before__lt=now - QUEUED_GRACE))
        .exclude(memo_id__in=progressing)
        .order_by("id")
    )
    size = send_batch_size()
    while ids := list(lost.filter(id__gt=last_id).values_list("id", flat=True)[:size]):
        enqueue("memos.send_batch", ids)
        requeued += len(ids)
        last_id = ids[-1]
    interrupted = Memo.objects.filter(
        status=Memo.Status.SENDING, dispatched_at__isnull=True, send_started_at__lt=now - DISPATCH_GRACE
    ).values_list("id", flat=True)
    for memo_id in interrupted:
        enqueue("memos.dispatch_memo", memo_id)
    return {
        "abandoned": abandoned,
        "leases": len(leases),
        "requeued": requeued,
        "redispatched": len(interrupted),
        "cancelled": deliveries_of_stopped_memos_cancel(),
        "withdrawals_told": len(withdrawals_tell_late(now=now)),
    }


def deliveries_of_stopped_memos_cancel() -> int:
    """Queued deliveries of a withdrawn or cancelled memo will never be claimed: cancelled,
    saying which it was. Returns how many."""
    queued = Delivery.objects.filter(memo=OuterRef("pk"), status=DeliveryStatus.QUEUED)
    cancelled = 0
    stopped = Memo.objects.filter(Exists(queued), status__in=(Memo.Status.WITHDRAWN, Memo.Status.CANCELLED))
    for memo in stopped.only("id", "status"):
        cancelled += deliveries_cancel_queued(memo=memo, withdrawn=memo.status == Memo.Status.WITHDRAWN)
    return cancelled


def withdrawals_tell_late(*, now: dt.datetime) -> list[int]:
    """Memos withdrawn lately that a recipient has no notice of yet (their email was
    recorded sent after the withdrawal): their notices are made; returns the memos'."""
    recent = Memo.objects.filter(status=Memo.Status.WITHDRAWN, withdrawn_at__gte=now - WITHDRAWN_WATCH)
    late = [memo.pk for memo in recent.only("id") if withdrawal_unnotified(memo).exists()]
    for memo_id in late:
        enqueue("memos.withdrawal_notify", memo_id)
    return late


def leases_recover() -> list[tuple[int, float]]:
    """Take over every expired lease and enqueue its reconciliation, delayed until the
    provider's events can be trusted. Beat runs it every 15 s as well (settings.py)."""
    leases = leases_expired_take_over(now=timezone.now())
    for lease_id, wait in leases:
        enqueue_later("memos.reconcile_lease", lease_id, countdown=wait)
    return leases


def deliveries_stuck_lease(*, now: dt.datetime) -> int:
    """Put deliveries stuck in `sending` under no lease into an expired one (one per
    memo), so that they are reconciled like a dead worker's; returns how many."""
    stuck = {
        delivery_id: (memo_id, claimed)
        for delivery_id, memo_id, claimed in Delivery.objects.filter(
            status=DeliveryStatus.SENDING, status_changed_at__lt=now - SENDING_GRACE
        ).values_list("id", "memo_id", "status_changed_at")
    }
    if not stuck:
        return 0
    for ids in SendLease.objects.values_list("delivery_ids", flat=True):
        for delivery_id in ids:
            stuck.pop(delivery_id, None)
    by_memo: dict[int, list[int]] = {}
    for delivery_id, (memo_id, _) in stuck.items():
        by_memo.setdefault(memo_id, []).append(delivery_id)
    for memo_id, ids in by_memo.items():
        # cast: status_changed_at__lt above leaves out the rows where it is NULL
        claimed = min(cast(dt.datetime, stuck[i][1]) for i in ids)
        SendLease.objects.create(
            holder=f"{SWEEPER}no lease",
            memo_id=memo_id,
            delivery_ids=sorted(ids),
            created_at=claimed,
            last_renewed_at=claimed,
            expires_at=now - dt.timedelta(microseconds=1),
            note="left sending under no lease for longer than the hard time limit",
        )
    return len(stuck)
