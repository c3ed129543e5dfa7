"""Withdraw a memo whose send started: it is taken back, with a reason.

The send stops (what is still queued, reminders too, ends cancelled; a withdrawn memo's
deliveries can no longer be claimed, swept or reminded: none of them asks about a memo
outside MEMO_MAY_SEND), the memo becomes withdrawn with who, when and why, and everyone
whose email the provider took is told, in their language. The evidence chain records the
withdrawal with the notice's text hash per language. The developer's page of a withdrawn
memo says so and takes no answers (answer/).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet

from memo_service.developers.models import Developer
from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.delivery_status import deliveries_cancel_queued
from memo_service.memos.evidence.append import evidence_append
from memo_service.memos.evidence.payloads import withdrawal_payload
from memo_service.memos.memo_status import memo_mark_withdrawn
from memo_service.memos.models import DELIVERY_HANDED_OVER, Delivery, EvidenceRecord, Memo, Notification
from memo_service.memos.notify.notifications import notifications_create

# A reason is a sentence or two for the developers' notice and the evidence, not a letter.
REASON_MAX = 500
# Recipients whose notices are made per query and insert: memory stays flat however many.
NOTICE_PAGE = 5_000


class WithdrawalRefused(Exception):
    pass


@dataclass(frozen=True)
class Withdrawal:
    cancelled: int  # queued emails that will never go
    notified: int  # developers told of the withdrawal


def withdrawal_recipients(memo: Memo) -> QuerySet[Developer]:
    """Those who received the memo: whose initial email the provider took (sent,
    delivered, bounced or complained), and who were not erased since."""
    received = Delivery.objects.filter(
        memo=memo, developer=OuterRef("pk"), kind=Delivery.Kind.INITIAL, status__in=DELIVERY_HANDED_OVER
    )
    return Developer.objects.filter(Exists(received), erased_at__isnull=True).order_by("id")


def reason_problem(reason: str) -> str:
    """Why a withdrawal's reason cannot be taken ("" when it can)."""
    if not reason.strip():
        return "A withdrawal needs a reason: the developers who received the memo are told it."
    if len(reason.strip()) > REASON_MAX:
        return f"Keep the reason under {REASON_MAX} characters (it has {len(reason.strip())})."
    return ""


def memo_withdraw(*, memo: Memo, by: Actor, reason: str) -> Withdrawal:
    """Withdraw a memo that is sending, paused or sent; refused (changing nothing) for
    any other, or without a reason."""
    if problem := reason_problem(reason):
        raise WithdrawalRefused(problem)
    reason = reason.strip()
    with transaction.atomic():
        if not memo_mark_withdrawn(memo=memo, by=by, reason=reason):
            current = Memo.objects.get(pk=memo.pk)
            raise WithdrawalRefused(
                f"“{memo.title}” is {current.get_status_display()}: only a memo whose send started (sending, "
                "paused or sent) can be withdrawn." + (" Cancel it instead." if current.is_editable else "")
            )
        cancelled = deliveries_cancel_queued(memo=memo)
        withdrawn = Memo.objects.get(pk=memo.pk)
        sent_on = withdrawn.send_started_at or withdrawn.approved_at or withdrawn.created_at
        notice_hashes: dict[str, str] = {}
        notified = last = 0
        # A page of recipients at a time: a memo's audience may be a million developers.
        while page := list(withdrawal_recipients(withdrawn).filter(pk__gt=last)[:NOTICE_PAGE]):
            notices = notifications_create(
                kind=Notification.Kind.WITHDRAWAL,
                memo=withdrawn,
                developers=page,
                context={"reason": reason, "sent_on": f"{sent_on:%Y-%m-%d}"},
            )
            notice_hashes |= {n.language: n.text_hash for n in notices}
            notified += len(notices)
            last = page[-1].pk
        evidence_append(
            memo_id=memo.pk,
            kind=EvidenceRecord.Kind.WITHDRAWAL,
            object_id=memo.pk,
            payload=withdrawal_payload(withdrawn, notice_hashes=notice_hashes, notified=notified),
        )
        audit_record(
            actor=by,
            action="memo.withdrawn",
            obj=memo,
            reason=reason,
            deliveries_cancelled=cancelled,
            notified=notified,
        )
    return Withdrawal(cancelled=cancelled, notified=notified)
