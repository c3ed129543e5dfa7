"""What the platform is told: an answer, and the developers who had not acknowledged by a
memo's deadline. Each becomes a message per subscribed endpoint (messages.py)."""

from __future__ import annotations

from django.db import transaction
from django.db.models import OuterRef
from django.utils import timezone

from memo_service.memos.models import MEMO_MAY_SEND, Answer, Delivery, Memo, WebhookEndpoint
from memo_service.memos.reminders import not_acknowledged
from memo_service.memos.webhooks.messages import webhooks_enqueue

E = WebhookEndpoint.Event
PAGE = 1_000  # developer ids per deadline_passed message


def notify_answer(answer: Answer) -> None:
    # Keyed by str: answer.response is the stored value, which equals its Response member.
    events: dict[str, WebhookEndpoint.Event] = {
        Answer.Response.ACKNOWLEDGED: E.ACKNOWLEDGED,
        Answer.Response.DISPUTES_REGION: E.DISPUTED,
        Answer.Response.DISPUTES_TRAFFIC: E.DISPUTED,
    }
    event = events.get(answer.response)
    if event is None:
        return
    webhooks_enqueue(
        event,
        [
            {
                "memo": answer.memo.slug,
                "memo_id": answer.memo_id,
                "developer": answer.developer.external_id,
                "response": answer.response,
                "answered_at": answer.created_at.isoformat(),
                "content_hash": answer.content_hash,
                "suspected_automation": answer.suspected_automation,
                "country_claimed": str(answer.country_claimed or ""),
                "channel": answer.channel,
            }
        ],
    )


def memos_deadline_notify() -> int:
    """Tell the platform, once per memo, which developers had not acknowledged by the
    deadline (exempted ones excepted), in pages of PAGE ids. Returns memos notified."""
    notified = 0
    due = Memo.objects.filter(
        status__in=MEMO_MAY_SEND,
        ack_deadline__lt=timezone.now(),
        deadline_notified_at__isnull=True,
    )
    if not any(E.DEADLINE_PASSED in e.events for e in WebhookEndpoint.objects.filter(is_active=True)):
        return 0  # nobody to tell yet: an endpoint added later still hears of these
    for memo in due:
        with transaction.atomic():
            if not Memo.objects.filter(pk=memo.pk, deadline_notified_at__isnull=True).update(
                deadline_notified_at=timezone.now()
            ):
                continue  # another beat got there first
            missing = list(
                Delivery.objects.filter(memo=memo, kind=Delivery.Kind.INITIAL)
                .filter(not_acknowledged(memo, OuterRef("developer")))
                .order_by("developer_id")
                .values_list("developer__external_id", flat=True)
            )
            pages = max(1, -(-len(missing) // PAGE))
            assert memo.ack_deadline is not None  # `due` holds only memos whose deadline passed
            webhooks_enqueue(
                E.DEADLINE_PASSED,
                [
                    {
                        "memo": memo.slug,
                        "memo_id": memo.pk,
                        "deadline": memo.ack_deadline.isoformat(),
                        "page": n + 1,
                        "pages": pages,
                        "not_acknowledged": missing[n * PAGE : (n + 1) * PAGE],
                    }
                    for n in range(pages)
                ],
            )
        notified += 1
    return notified
