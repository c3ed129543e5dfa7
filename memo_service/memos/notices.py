"""In-app notices: the memos a developer was sent, for the platform's console to show
until they answer (its answers come back through acks.answer_record, channel "console").

A console asks on every page load, so a developer's notices are one indexed query
(their deliveries, with the memo, the developer and their answers joined in), and each
memo's templates stay compiled between calls (rendering.sent_text).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos.acks import ack_url
from memo_service.memos.models import Acknowledgement, Delivery, DisputeResolution, Memo
from memo_service.memos.rendering import sent_text

R = Acknowledgement.Response
S = Delivery.Status
# A notice for every memo whose first email was handed over or given up on: the console
# is there for the emails that bounced, failed or were never read. Not for one still
# queued or sending (a paused send holds them back), nor a cancelled one.
SHOWN_STATUSES = [S.SENT, S.DELIVERED, S.BOUNCED, S.COMPLAINED, S.FAILED, S.OUTCOME_UNKNOWN]
SHOWN_MEMO_STATUSES = [Memo.Status.SENDING, Memo.Status.PAUSED, Memo.Status.SENT]
STATES = ("unanswered", "all")


def _answers(response: str) -> Any:
    return Acknowledgement.objects.filter(memo=OuterRef("memo"), developer=OuterRef("developer"), response=response)


def _dispute(field: str) -> Subquery:
    return Subquery(_answers(R.DISPUTES_REGION).values(field)[:1])


def notices_query(*, external_id: str, state: str = "unanswered") -> Any:
    """The developer's notices, newest first, as one query of initial deliveries."""
    notices = (
        Delivery.objects.filter(
            developer__external_id=external_id, developer__erased_at__isnull=True,
            kind=Delivery.Kind.INITIAL, status__in=SHOWN_STATUSES, memo__status__in=SHOWN_MEMO_STATUSES,
        )
        .select_related("memo", "developer")
        .annotate(
            acknowledged=Exists(_answers(R.ACKNOWLEDGED)),
            disputed=Exists(_answers(R.DISPUTES_REGION)),
            needs_help=Exists(_answers(R.NEEDS_HELP)),
            country_claimed=_dispute("country_claimed"),
            dispute_outcome=_dispute("resolution__outcome"),
            exempt=Exists(DisputeResolution.objects.filter(
                answer__memo=OuterRef("memo"), answer__developer=OuterRef("developer"), exempt=True)),
        )
        .order_by(F("memo__send_started_at").desc(nulls_last=True), "-memo_id")
    )
    if state == "unanswered":
        # Still to acknowledge (as reminders count it: a question or a dispute waiting is
        # no acknowledgement), not exempted, and the memo still takes answers.
        closed_before = timezone.now() - dt.timedelta(days=settings.ACK_GRACE_DAYS)
        notices = notices.filter(acknowledged=False, exempt=False).filter(
            Q(memo__ack_deadline__isnull=True) | Q(memo__ack_deadline__gte=closed_before)
        )
    return notices


def _state(delivery: Any) -> str:
    if delivery.acknowledged:
        return R.ACKNOWLEDGED
    if delivery.disputed:
        return R.DISPUTES_REGION
    if delivery.needs_help:
        return R.NEEDS_HELP
    return "unanswered"


def notice(delivery: Any) -> dict[str, Any]:
    """One notice: the memo as sent to the developer, their answer so far, a fresh link."""
    memo = delivery.memo
    link = ack_url(memo.pk, delivery.developer_id)
    sent = sent_text(delivery, link)
    return {
        "memo": memo.slug,
        "memo_id": memo.pk,
        "title": memo.title,
        "language": sent.language,
        "subject": sent.subject,
        "text": sent.text,
        "content_hash": sent.content_hash,
        "effective_date": memo.effective_date,
        "ack_deadline": memo.ack_deadline,
        "state": _state(delivery),
        "dispute": {
            "country_claimed": delivery.country_claimed,
            "outcome": delivery.dispute_outcome,
            "exempt": delivery.exempt,
        } if delivery.disputed else None,
        "ack_url": link,
    }


def developer_notices(*, external_id: str, state: str = "unanswered") -> list[dict[str, Any]] | None:
    """The developer's notices, newest first; None when there is no such developer."""
    rows = list(notices_query(external_id=external_id, state=state))
    if not rows and not Developer.objects.filter(external_id=external_id, erased_at__isnull=True).exists():
        return None
    return [notice(row) for row in rows]
