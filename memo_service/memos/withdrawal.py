"""Withdraw a memo whose send started: it is taken back, with a reason.

The send stops (what is still queued, reminders too, ends cancelled; a withdrawn memo's
deliveries can no longer be claimed, swept or reminded: none of them asks about a memo
outside MEMO_MAY_SEND, and rows a recovery puts back in the queue are cancelled by the
sweeper), the memo becomes withdrawn with who, when and why, and the evidence chain
records the withdrawal with the notice's text hash per language: one short transaction.
Then everyone whose email the provider took is told, in their language, a page at a time
in a task (withdrawal_notify), which the sweeper runs again while an email that was
being sent at the withdrawal may still be recorded as sent. The developer's page of a
withdrawn memo says so and takes no answers (answer/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet

from memo_service.developers.models import Developer
from memo_service.lib.db import row_lock
from memo_service.memos.answer.sent_text import SubjectInLanguage
from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.delivery_status import deliveries_cancel_queued
from memo_service.memos.evidence.append import evidence_append
from memo_service.memos.evidence.payloads import withdrawal_payload
from memo_service.memos.memo_status import memo_mark_withdrawn
from memo_service.memos.models import DELIVERY_HANDED_OVER, Delivery, EvidenceRecord, Memo, Notification
from memo_service.memos.notify.notifications import notification_hash, notification_text, notifications_create
from memo_service.memos.queue import enqueue_on_commit

# A reason is a sentence or two for the developers' notice and the evidence, not a letter.
REASON_MAX = 500
# Recipients whose notices are made per query and insert: memory stays flat however many.
NOTICE_PAGE = 5_000


class WithdrawalRefused(Exception):
    pass


@dataclass(frozen=True)
class Withdrawal:
    cancelled: int  # queued emails that will never go
    notified: int  # developers who received it, told of the withdrawal (by withdrawal_notify)


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
    any other, or without a reason. The notices are made after commit (withdrawal_notify):
    a million of them in this transaction would hold SQLite's write lock all along."""
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
        cancelled = deliveries_cancel_queued(memo=memo, withdrawn=True)
        withdrawn = Memo.objects.get(pk=memo.pk)
        recipients = withdrawal_recipients(withdrawn)
        notified = recipients.count()
        languages = set(recipients.order_by().values_list("language", flat=True).distinct())
        context = notice_context(withdrawn)
        notice_hashes = {
            language: notification_hash(*notification_text(Notification.Kind.WITHDRAWAL, language, context))
            for language in sorted({language or settings.LANGUAGE_CODE for language in languages})
        }
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
        if notified:
            enqueue_on_commit("memos.withdrawal_notify", memo.pk)
    return Withdrawal(cancelled=cancelled, notified=notified)


def notice_context(memo: Memo) -> dict[str, Any]:
    """What a withdrawal notice says besides the memo: the reason and when it was sent."""
    sent_on = memo.send_started_at or memo.approved_at or memo.created_at
    return {
        "memo": memo,
        "reason": memo.withdrawal_reason,
        "sent_on": f"{sent_on:%Y-%m-%d}",
        "subject": SubjectInLanguage(memo),
    }


def withdrawal_unnotified(memo: Memo) -> QuerySet[Developer]:
    """The memo's recipients who have no withdrawal notice yet: all of them at first;
    later, one whose email was being sent at the withdrawal and was recorded sent after."""
    told = Notification.objects.filter(kind=Notification.Kind.WITHDRAWAL, memo=memo, developer=OuterRef("pk"))
    return withdrawal_recipients(memo).exclude(Exists(told))


def withdrawal_notify(*, memo_id: int) -> int:
    """Tell the withdrawn memo's recipients who were not told yet, a page at a time, each
    page in its own transaction: a rerun (the task redelivered, the sweeper's) tells
    nobody twice. Returns how many were told now."""
    memo = Memo.objects.get(pk=memo_id)
    if memo.status != Memo.Status.WITHDRAWN:
        return 0
    context = notice_context(memo)
    notified = last = 0
    while True:
        with transaction.atomic():
            # Two runs at once take turns per page, each reading who is left after the other.
            row_lock(Memo.objects.filter(pk=memo_id))
            page = list(withdrawal_unnotified(memo).filter(pk__gt=last)[:NOTICE_PAGE])
            if not page:
                return notified
            notices = notifications_create(
                kind=Notification.Kind.WITHDRAWAL, memo=memo, developers=page, context=context
            )
        notified += len(notices)
        last = page[-1].pk
