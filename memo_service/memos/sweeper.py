"""Settle what a lost task or a dead worker left behind (run by beat every minute).

- A delivery still queued long after its batch was enqueued, of a memo whose send has
  made no progress for as long, lost its task (a broker flushed, a message dropped): it
  is enqueued again. Claims are guarded, so a late original task and the new one cannot
  both send it. (A million-recipient send has rows queued for many minutes while its
  tasks wait their turn; those are not lost, and are left alone.)
- A delivery left in `sending` by a worker that died mid-send may or may not have
  reached the provider: it becomes `outcome_unknown`, to be reconciled from tracking
  events, never sent again, unless the backend sends with an idempotency key
  (memo_service.backends.resend): then it is queued and sent again, harmlessly.
- A memo whose dispatch was interrupted is dispatched again (it resumes).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from memo_service.memos.dispatch import memo_finish_if_done, send_batch_size
from memo_service.memos.queue import enqueue
from memo_service.memos.sending import backend_is_idempotent
from memo_service.memos.models import Delivery, Memo

S = Delivery.Status
# A send moves some delivery on every few seconds; ten minutes without means its tasks are gone.
QUEUED_GRACE = dt.timedelta(minutes=10)
# Past the hard time limit no worker can still be sending it.
SENDING_GRACE = dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
# A dispatch task pages through even a million developers in a few minutes.
DISPATCH_GRACE = dt.timedelta(minutes=30)


def deliveries_sweep() -> dict[str, int]:
    now = timezone.now()
    stuck_sending = Delivery.objects.filter(status=S.SENDING, status_changed_at__lt=now - SENDING_GRACE)
    memo_ids = set(stuck_sending.values_list("memo_id", flat=True).distinct())
    if backend_is_idempotent():
        # The provider deduplicates by delivery id: sending it again cannot make a copy.
        abandoned = stuck_sending.update(
            status=S.QUEUED, status_changed_at=now, not_before=None,
            last_error="the worker sending it stopped; sent again with the same idempotency key",
        )
    else:
        abandoned = stuck_sending.update(
            status=S.OUTCOME_UNKNOWN, status_changed_at=now,
            last_error="the worker sending it stopped; the provider may or may not have it",
        )
    requeued = 0
    last_id = 0
    # Read once: as a subquery per queued row it would cost queued rows × sent rows.
    progressing = set(
        Delivery.objects.filter(sent_at__gte=now - QUEUED_GRACE).values_list("memo_id", flat=True).distinct()
    )
    lost = Delivery.objects.filter(
        status=S.QUEUED, created_at__lt=now - QUEUED_GRACE,
        memo__status__in=[Memo.Status.SENDING, Memo.Status.SENT],
    ).filter(Q(not_before__isnull=True) | Q(not_before__lt=now - QUEUED_GRACE)).exclude(
        memo_id__in=progressing
    ).order_by("id")
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
    for memo_id in memo_ids:
        memo_finish_if_done(memo_id=memo_id)
    return {"abandoned": abandoned, "requeued": requeued, "redispatched": len(interrupted)}
