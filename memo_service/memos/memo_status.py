"""The memo's state machine: every change of Memo.status is one function here.

    draft ─request─► awaiting_approval ─approve (not the author)─► approved ◄─unschedule─┐
      ▲                                                              │  └─schedule─► scheduled
      └──────────── an edit voids the approval ◄─────────────────────┴───────────────────┘
    awaiting_approval ─request changes (with a comment)─► draft
    approved | scheduled ─start─► sending ─pause─► paused ─resume─► sending
    sending (every delivery dispatched and settled) ─► sent
    anything not yet sent ─cancel─► cancelled
    sending | paused | sent ─withdraw (with a reason)─► withdrawn

Each function changes the row only if it is still in a status the transition starts
from (one UPDATE with the status in its WHERE, so two admins or workers racing cannot
both win) and says whether it did; the step that asked (approval, dispatch, control)
decides what a refusal means and records who did it. The sets of statuses the rest of the
code asks about are named in models.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Exists, OuterRef
from django.utils import timezone

from memo_service.memos.models import (
    DELIVERY_PENDING,
    MEMO_CANCELLABLE,
    MEMO_EDITABLE,
    MEMO_STARTABLE,
    MEMO_WITHDRAWABLE,
    Delivery,
    Memo,
)

MemoStatus = Memo.Status
# An approval is voided by an edit in these (a draft has none to void).
_APPROVAL_VOIDABLE = tuple(s for s in MEMO_EDITABLE if s != MemoStatus.DRAFT)
STATUS_REASON_MAX = 300


def _move(memo_id: int, sources: tuple[str, ...], **changes: Any) -> bool:
    return bool(Memo.objects.filter(pk=memo_id, status__in=sources).update(**changes))


def memo_mark_awaiting_approval(*, memo: Memo, requested_by: Any) -> bool:
    return _move(memo.pk, (MemoStatus.DRAFT,), status=MemoStatus.AWAITING_APPROVAL, requested_by=requested_by)


def memo_mark_approved(*, memo: Memo, approver: Any, content_hash: str, approved_rules: dict[str, Any]) -> bool:
    return _move(
        memo.pk,
        (MemoStatus.AWAITING_APPROVAL,),
        status=MemoStatus.APPROVED,
        approver=approver,
        approved_at=timezone.now(),
        content_hash=content_hash,
        approved_rules=approved_rules,
    )


def memo_mark_changes_requested(*, memo: Memo) -> bool:
    """Back to draft: its approver asked for changes instead of approving."""
    return _move(memo.pk, (MemoStatus.AWAITING_APPROVAL,), status=MemoStatus.DRAFT)


def memo_void_approval(*, memo: Memo) -> bool:
    """Back to draft after an edit, the approval and any schedule gone."""
    return _move(
        memo.pk,
        _APPROVAL_VOIDABLE,
        status=MemoStatus.DRAFT,
        approver=None,
        approved_at=None,
        content_hash="",
        approved_rules={},
        scheduled_at=None,
    )


def memo_mark_scheduled(*, memo: Memo, at: dt.datetime) -> bool:
    return _move(memo.pk, MEMO_STARTABLE, status=MemoStatus.SCHEDULED, scheduled_at=at, status_reason="")


def memo_mark_unscheduled(*, memo: Memo, reason: str = "") -> bool:
    """Back to approved: the schedule cancelled, or (with `reason`) a scheduled send
    that could not start."""
    return _move(
        memo.pk,
        (MemoStatus.SCHEDULED,),
        status=MemoStatus.APPROVED,
        scheduled_at=None,
        status_reason=reason[:STATUS_REASON_MAX],
    )


def memo_mark_sending(*, memo: Memo) -> bool:
    return _move(memo.pk, MEMO_STARTABLE, status=MemoStatus.SENDING, send_started_at=timezone.now(), status_reason="")


def memo_mark_sent_if_done(*, memo_id: int) -> bool:
    """A fully dispatched memo is sent once none of its deliveries is queued or sending."""
    pending = Delivery.objects.filter(memo_id=OuterRef("pk"), status__in=DELIVERY_PENDING)
    return bool(
        Memo.objects.filter(pk=memo_id, status=MemoStatus.SENDING, dispatched_at__isnull=False)
        .filter(~Exists(pending))
        .update(status=MemoStatus.SENT)
    )


def memo_mark_paused(*, memo: Memo, reason: str) -> bool:
    return _move(memo.pk, (MemoStatus.SENDING,), status=MemoStatus.PAUSED, status_reason=reason[:STATUS_REASON_MAX])


def memo_mark_resumed(*, memo: Memo) -> bool:
    return _move(memo.pk, (MemoStatus.PAUSED,), status=MemoStatus.SENDING, status_reason="")


def memo_mark_cancelled(*, memo: Memo) -> bool:
    return _move(memo.pk, MEMO_CANCELLABLE, status=MemoStatus.CANCELLED, scheduled_at=None)


def memo_mark_withdrawn(*, memo: Memo, by: Any, reason: str) -> bool:
    """Taken back after (some of) its emails went out: who, when and why."""
    return _move(
        memo.pk,
        MEMO_WITHDRAWABLE,
        status=MemoStatus.WITHDRAWN,
        withdrawn_at=timezone.now(),
        withdrawn_by=by if by is not None and by.pk else None,
        withdrawal_reason=reason,
        scheduled_at=None,
    )
