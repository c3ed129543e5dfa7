"""Two-person approval: who may ask for it, approve it or ask for changes, who is told,
and what each step records (the status changes themselves are memo_status.py's;
scheduling an approved memo is send/schedule.py's).

Asking for approval emails everyone who may approve it; the approver approves (the
composer is told) or asks for changes with a comment (the memo returns to draft, the
composer is told and sees the comment on the memo page). Approval freezes the content
(its hash) and the audience rules, and snapshots who the audience held, so the sender
sees what changed since. Any edit voids an approval.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.urls import reverse

from memo_service.memos.audience import audience_reasons, traffic_codes, traffic_window
from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.compose.checks import memo_check, problems_text
from memo_service.memos.compose.rendered_versions import versions_rendered
from memo_service.memos.compose.sources import content_hash_of, memo_content, memo_content_hash
from memo_service.memos.compose.versions import memo_versions, versions_problem, versions_shown
from memo_service.memos.evidence.append import evidence_append
from memo_service.memos.evidence.payloads import approval_payload
from memo_service.memos.memo_status import (
    memo_mark_approved,
    memo_mark_awaiting_approval,
    memo_mark_changes_requested,
    memo_void_approval,
)
from memo_service.memos.models import AudienceSnapshot, AuditEvent, EvidenceRecord, Memo, Notification
from memo_service.memos.notify.notifications import notification_create
from memo_service.memos.snapshot import audience_snapshot

MemoStatus = Memo.Status
# A request for changes says what to change; a page of it is plenty, and the email carries it.
COMMENT_MAX = 4000


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
    """Ask for approval; everyone who may approve it is emailed (REVIEW_REQUESTED)."""
    _renders(memo)
    with transaction.atomic():
        refuse_unless_moved(
            memo, memo_mark_awaiting_approval(memo=memo, requested_by=by if by is not None and by.pk else None)
        )
        audit_record(actor=by, action="memo.approval_requested", obj=memo)
        memo = Memo.objects.get(pk=memo.pk)
        context = {"requester": person_name(by), **_links(memo)}
        for approver in memo_approvers(memo):
            notification_create(kind=Notification.Kind.REVIEW_REQUESTED, memo=memo, user=approver, context=context)


def memo_writers(memo: Memo) -> set[int | None]:
    """Who may neither approve the memo nor ask for changes to it: its author, whoever
    asked for its approval, and everyone who edited it since its last approval."""
    return {memo.author_id, memo.requested_by_id, memo.last_edited_by_id} | set(memo_editors_since_approval(memo))


def _refuse_unless_reviewer(memo: Memo, by: User) -> None:
    if not by.has_perm("memos.approve_memo"):
        raise ApprovalRefused("you may not approve memos")
    if memo.author_id is None or by.pk in memo_writers(memo):
        raise ApprovalRefused(
            "the author of a memo cannot approve it: a second person must "
            "(one who neither wrote, edited since the last approval, nor submitted it)"
        )


def memo_approve(*, memo: Memo, by: User, reviewed_hash: str | None = None) -> None:
    """Approve the memo; `reviewed_hash`: the content hash of what the approver's review
    page showed (an approval of text that changed since is refused)."""
    memo = Memo.objects.get(pk=memo.pk)
    _refuse_unless_reviewer(memo, by)
    if memo.status != MemoStatus.AWAITING_APPROVAL:
        raise ApprovalRefused(f"memo {memo.slug} is {memo.status}, not awaiting approval")
    versions = _renders(memo)
    content = memo_content(memo)
    content_hash, rules = content_hash_of(content), audience_rules(memo)
    if reviewed_hash is not None and reviewed_hash != content_hash:
        raise ApprovalRefused(f"memo {memo.slug} changed since you reviewed it: review it again")
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
        context = {"approver": person_name(by), **_links(approved)}
        for composer in _composers(approved, but=by):
            notification_create(kind=Notification.Kind.APPROVED, memo=approved, user=composer, context=context)


def memo_request_changes(*, memo: Memo, by: User, comment: str) -> None:
    """Return a memo awaiting approval to draft with a comment that says what to change;
    its author and whoever asked for approval are emailed the comment (CHANGES_REQUESTED)."""
    comment = (comment or "").strip()
    if not comment:
        raise ApprovalRefused("say what should change: a comment is required")
    if len(comment) > COMMENT_MAX:
        raise ApprovalRefused(f"the comment is {len(comment):,} characters long: at most {COMMENT_MAX:,}")
    memo = Memo.objects.get(pk=memo.pk)
    _refuse_unless_reviewer(memo, by)
    with transaction.atomic():
        refuse_unless_moved(memo, memo_mark_changes_requested(memo=memo))
        audit_record(
            actor=by, action="memo.changes_requested", obj=memo, comment=comment, content_hash=memo_content_hash(memo)
        )
        context = {"reviewer": person_name(by), "comment": comment, **_links(memo)}
        for composer in _composers(memo, but=by):
            notification_create(kind=Notification.Kind.CHANGES_REQUESTED, memo=memo, user=composer, context=context)


def person_name(user: Actor) -> str:
    if user is None or not user.pk:
        return "memo-service"
    return user.get_full_name() or user.get_username()


def _links(memo: Memo) -> dict[str, str]:
    site = settings.SITE_URL.rstrip("/")
    return {
        "site_url": site,
        "memo_url": site + reverse("admin:memos_memo_change", args=[memo.pk]),
        "review_url": site + reverse("admin:memos_memo_review", args=[memo.pk]),
    }


def _composers(memo: Memo, but: User) -> list[User]:
    """The memo's author and whoever asked for its approval (once each), not `but`."""
    ids = [pk for pk in {memo.author_id, memo.requested_by_id} if pk is not None and pk != but.pk]
    return list(User.objects.filter(pk__in=ids, is_active=True).order_by("pk"))


def memo_approvers(memo: Memo) -> list[User]:
    """The staff who may approve the memo now: the Approver role (or a superuser), and
    none of its writers."""
    may = User.objects.with_perm(
        "memos.approve_memo",
        is_active=True,
        include_superusers=True,
        backend="django.contrib.auth.backends.ModelBackend",  # the roles are its permissions
    )
    writers = [pk for pk in memo_writers(memo) if pk is not None]
    return list(may.filter(is_staff=True).exclude(pk__in=writers).order_by("pk"))


def memos_awaiting(user: User) -> list[Memo]:
    """The memos awaiting an approval `user` may give."""
    if not user.is_active or not user.has_perm("memos.approve_memo"):
        return []
    awaiting = Memo.objects.filter(status=MemoStatus.AWAITING_APPROVAL).order_by("updated_at", "pk")
    return [m for m in awaiting if m.author_id is not None and user.pk not in memo_writers(m)]


def changes_requested(memo: Memo) -> AuditEvent | None:
    """The newest request for changes since the memo's last approval, with its comment
    (detail["comment"]) and who asked (actor)."""
    events = AuditEvent.objects.filter(object_type=Memo._meta.label_lower, object_id=str(memo.pk))
    last_approval = events.filter(action="memo.approved").order_by("-id").values_list("id", flat=True).first()
    return (
        events.filter(action="memo.changes_requested", id__gt=last_approval or 0)
        .select_related("actor")
        .order_by("-id")
        .first()
    )


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


def memo_edited(*, memo: Memo, by: Actor, fields: list[str]) -> bool:
    """An edit returns an approved (or awaiting, or scheduled) memo to draft; says whether
    it did (an approval, or a request for one, was voided)."""
    Memo.objects.filter(pk=memo.pk).update(last_edited_by=by if by is not None and by.pk else None)
    voided = memo_void_approval(memo=memo)
    if voided:
        AudienceSnapshot.objects.filter(memo=memo).delete()
        audit_record(actor=by, action="memo.approval_voided", obj=memo, fields=fields)
    audit_record(actor=by, action="memo.edited", obj=memo, fields=fields)
    return voided
