"""Scheduling an approved memo's send: setting a time, cancelling it, and giving up on one
that could not start. Beat starts a scheduled send when its time comes
(dispatch.memos_send_scheduled); the status changes themselves are memo_status.py's."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from memo_service.memos.approval import ApprovalRefused, refuse_unless_moved
from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.memo_status import memo_mark_scheduled, memo_mark_unscheduled
from memo_service.memos.models import Memo


def memo_schedule(*, memo: Memo, at: dt.datetime, by: Actor) -> None:
    if at <= timezone.now():
        raise ApprovalRefused("the time to send must be in the future")
    refuse_unless_moved(memo, memo_mark_scheduled(memo=memo, at=at))
    audit_record(actor=by, action="memo.scheduled", obj=memo, at=at.isoformat())


def memo_unschedule(*, memo: Memo, by: Actor) -> None:
    refuse_unless_moved(memo, memo_mark_unscheduled(memo=memo))
    audit_record(actor=by, action="memo.schedule_cancelled", obj=memo)


def memo_schedule_failed(*, memo: Memo, reason: str) -> None:
    """A scheduled send that could not start goes back to approved, saying why."""
    memo_mark_unscheduled(memo=memo, reason=f"the scheduled send did not start: {reason}")
    audit_record(actor=None, action="memo.schedule_failed", obj=memo, reason=reason)
