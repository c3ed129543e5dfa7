"""Start a send: freeze the memo, snapshot its audience as Delivery rows, enqueue batches.

Dispatch pages through the audience by developer id, one transaction per page, so
memory stays flat however large the cohort is, and each page's batches are enqueued
only once its rows are committed. Every step can be rerun: Delivery rows are unique per
(memo, developer, kind) and a worker claims a row only while it is still queued.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from memo_service.memos import rendering
from memo_service.memos.audience import audience_reasons, memo_audience
from memo_service.memos.models import Delivery, Memo

# Developers per transaction: a bulk insert of 2,000 rows takes ~60 ms, short enough
# that the web server's writes (acknowledgements) never wait long behind it on SQLite.
PAGE_SIZE = 2_000
# Deliveries per send task: big enough to amortize the claim query and the provider
# connection, small enough that one task finishes in seconds and a crash redoes little.
BATCH_SIZE = 100

STARTABLE = [Memo.Status.DRAFT, Memo.Status.APPROVED, Memo.Status.SCHEDULED]


class DispatchRefused(Exception):
    pass


@dataclass
class DispatchResult:
    targeted: int
    enqueued: int


def memo_send_start(*, memo: Memo) -> None:
    """Check every language renders, freeze the content hash and mark the memo sending.

    Rerunning it on a memo whose dispatch was interrupted is allowed (it resumes).
    """
    memo = Memo.objects.get(pk=memo.pk)
    if memo.status == Memo.Status.SENDING and memo.dispatched_at is None:
        return
    if memo.status not in STARTABLE:
        raise DispatchRefused(f"memo {memo.slug} is {memo.status}; only a draft or approved memo can be sent")
    problems = rendering.memo_check(memo)
    if problems:
        detail = "; ".join(
            f"{lang} {field}: {err}" for lang, errs in problems.items() for field, err in errs.items()
        )
        raise DispatchRefused(f"memo {memo.slug} does not render: {detail}")
    started = Memo.objects.filter(pk=memo.pk, status__in=STARTABLE).update(
        status=Memo.Status.SENDING, content_hash=rendering.memo_content_hash(memo)
    )
    if not started:
        raise DispatchRefused(f"memo {memo.slug} was started by someone else")


def memo_dispatch(
    *, memo_id: int, progress: Callable[[int], None] | None = None
) -> DispatchResult:
    """Create the Delivery rows page by page and enqueue their send batches."""
    from memo_service.memos.tasks import send_batch

    memo = Memo.objects.get(pk=memo_id)
    if memo.status != Memo.Status.SENDING:
        raise DispatchRefused(f"memo {memo.slug} is {memo.status}, not sending")
    reasons = audience_reasons(memo)
    audience = memo_audience(memo).order_by("id").values_list("id", "country", "language")
    enqueued = targeted = 0
    last_id = 0
    while page := list(audience.filter(id__gt=last_id)[:PAGE_SIZE]):
        first_id, last_id = page[0][0], page[-1][0]
        with transaction.atomic():
            Delivery.objects.bulk_create(
                [
                    Delivery(
                        memo_id=memo.pk, developer_id=dev_id, language=language,
                        reason=reasons[country],
                    )
                    for dev_id, country, language in page
                ],
                ignore_conflicts=True,
            )
            queued = list(
                Delivery.objects.filter(
                    memo_id=memo.pk, kind=Delivery.Kind.INITIAL, status=Delivery.Status.QUEUED,
                    developer_id__gte=first_id, developer_id__lte=last_id,
                ).order_by("id").values_list("id", flat=True)
            )
            for start in range(0, len(queued), BATCH_SIZE):
                send_batch.delay_on_commit(queued[start : start + BATCH_SIZE])
        enqueued += len(queued)
        targeted += len(page)
        if progress:
            progress(targeted)
    Memo.objects.filter(pk=memo.pk, dispatched_at__isnull=True).update(dispatched_at=timezone.now())
    memo_finish_if_done(memo_id=memo.pk)
    return DispatchResult(targeted=targeted, enqueued=enqueued)


def memo_finish_if_done(*, memo_id: int) -> bool:
    """Mark a fully dispatched memo sent once no Delivery is queued or sending."""
    pending = Delivery.objects.filter(
        memo_id=OuterRef("pk"), status__in=[Delivery.Status.QUEUED, Delivery.Status.SENDING]
    )
    return bool(
        Memo.objects.filter(pk=memo_id, status=Memo.Status.SENDING, dispatched_at__isnull=False)
        .filter(~Exists(pending))
        .update(status=Memo.Status.SENT)
    )
