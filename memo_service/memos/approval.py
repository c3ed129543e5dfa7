"""Two-person approval: who may ask for it and approve, and what each step records (the
status changes themselves are memo_status.py's; scheduling an approved memo is
send/schedule.py's).

Approval freezes the content (its hash) and the audience rules, and snapshots who the
audience held, so the sender sees what changed since. Any edit voids an approval.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from memo_service.memos.audience import audience_reasons, traffic_codes, traffic_window
from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.compose.checks import memo_check, problems_text
from memo_service.memos.compose.rendered_versions import versions_rendered
from memo_service.memos.compose.sources import content_hash_of, memo_content
from memo_service.memos.compose.versions import memo_versions, versions_problem, versions_shown
from memo_service.memos.evidence.append import evidence_append
from memo_service.memos.evidence.payloads import approval_payload
from memo_service.memos.memo_status import (
    memo_mark_approved,
    memo_mark_awaiting_approval,
    memo_void_approval,
)
from memo_service.memos.models import AudienceSnapshot, AuditEvent, EvidenceRecord, Memo
from memo_service.memos.snapshot import audience_snapshot

MemoStatus = Memo.Status


class ApprovalRefused(Exception):
    pass


def refuse_unless_moved(memo: Memo, moved: bool) -> None:
    """Refuse, naming the memo's status, a transition its status did not allow."""
    if not moved:
        current = Memo.objects.values_list("status", flat=True).get(pk=memo.pk)
        raise ApprovalRefused(f"memo {memo.slug} is {current}")


def _renders(memo: Memo) -> dict[str, list[str]]:
    """Refuse a memo that does not render, or whose versions cannot all be shown to its
    approver; the versions they can preview (versions_shown), for the approval record."""
    problems = memo_check(memo)
    if problems:
        raise ApprovalRefused(f"memo {memo.slug} does not render: {problems_text(problems)}")
    conditions = memo_versions(memo)
    if unlisted := versions_problem(memo, conditions):
        raise ApprovalRefused(f"memo {memo.slug}: its versions cannot all be shown to its approver: {unlisted}")
    return versions_shown(conditions)


def audience_rules(memo: Memo) -> dict[str, Any]:
    rules = {
        "countries": sorted(audience_reasons(memo)),
        "active_only": memo.active_only,
        "active_since": str(memo.active_since or ""),
        "attribute_filters": memo.attribute_filters or {},
    }
    if memo.audience_basis != Memo.Basis.ACCOUNT:
        first, last = traffic_window(memo)
        rules |= {
            "basis": memo.audience_basis,
            "traffic_countries": traffic_codes(memo),
            "traffic_min_requests": memo.traffic_min_requests,
            "traffic_from": first.isoformat(),
            "traffic_until": last.isoformat(),  # the window stays here: audience.traffic_window
        }
    return rules


def memo_request_approval(*, memo: Memo, by: Actor) -> None:
    _renders(memo)
    refuse_unless_moved(
        memo, memo_mark_awaiting_approval(memo=memo, requested_by=by if by is not None and by.pk else None)
    )
    audit_record(actor=by, action="memo.approval_requested", obj=memo)


def memo_approve(*, memo: Memo, by: User) -> None:
    memo = Memo.objects.get(pk=memo.pk)
    if not by.has_perm("memos.approve_memo"):
        raise ApprovalRefused("you may not approve memos")
    writers = {memo.author_id, memo.requested_by_id, memo.last_edited_by_id} | memo_editors_since_approval(memo)
    if memo.author_id is None or by.pk in writers:
        raise ApprovalRefused(
            "the author of a memo cannot approve it: a second person must "
            "(one who neither wrote, edited since the last approval, nor submitted it)"
        )
    if memo.status != MemoStatus.AWAITING_APPROVAL:
        raise ApprovalRefused(f"memo {memo.slug} is {memo.status}, not awaiting approval")
    versions = _renders(memo)
    content = memo_content(memo)
    content_hash, rules = content_hash_of(content), audience_rules(memo)
    with transaction.atomic():
        refuse_unless_moved(
            memo,
            memo_mark_approved(memo=memo, approver=by, content_hash=content_hash, approved_rules=rules),
        )
        approved = Memo.objects.get(pk=memo.pk)
        # The chain's record of what was approved: every later render checks itself against it.
        evidence_append(
            memo_id=memo.pk,
            kind=EvidenceRecord.Kind.APPROVAL,
            object_id=memo.pk,
            payload=approval_payload(
                approved,
                content=content,
                content_hash=content_hash,
                rules=rules,
                versions=versions,
                rendered=versions_rendered(approved),
            ),
        )
        audience_snapshot(approved)
        audit_record(actor=by, action="memo.approved", obj=memo, content_hash=content_hash)


def memo_editors_since_approval(memo: Memo) -> set[int]:
    """Everyone who changed the memo's content since its last approval (since it was
    written, if never approved), read from the audit log, where every edit is recorded:
    not only the last editor, who may have come after someone who rewrote the body."""
    events = AuditEvent.objects.filter(object_type=Memo._meta.label_lower, object_id=str(memo.pk))
    last_approval = events.filter(action="memo.approved").order_by("-id").values_list("id", flat=True).first()
    return set(
        events.filter(action="memo.edited", id__gt=last_approval or 0, actor__isnull=False).values_list(
            "actor_id", flat=True
        )
    )


def memo_edited(*, memo: Memo, by: Actor, fields: list[str]) -> None:
    """An edit returns an approved (or awaiting, or scheduled) memo to draft."""
    Memo.objects.filter(pk=memo.pk).update(last_edited_by=by if by is not None and by.pk else None)
    if memo_void_approval(memo=memo):
        AudienceSnapshot.objects.filter(memo=memo).delete()
        audit_record(actor=by, action="memo.approval_voided", obj=memo, fields=fields)
    audit_record(actor=by, action="memo.edited", obj=memo, fields=fields)
