"""The approver's pages: the review (every version rendered in every language, and what
changed since the last approval), its two answers (approve, after a confirmation; or ask
for changes with a comment), and what the memo page says of them (the comment, and that
saving voids an approval)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone

from memo_service.memos.admin.memo_forms import VOIDS_APPROVAL
from memo_service.memos.admin.memo_pages import MemoPages, memo_url
from memo_service.memos.admin.memo_review import memo_review
from memo_service.memos.approval import (
    COMMENT_MAX,
    ApprovalRefused,
    changes_requested,
    memo_approve,
    memo_request_changes,
    memo_writers,
    person_name,
)
from memo_service.memos.audience import audience_counts
from memo_service.memos.audit import signed_in
from memo_service.memos.compose.sources import memo_content_hash
from memo_service.memos.compose.versions import memo_versions
from memo_service.memos.models import Memo

MemoStatus = Memo.Status


def review_url(memo: Memo) -> str:
    return reverse("admin:memos_memo_review", args=[memo.pk])


def may_review(request: HttpRequest, memo: Memo) -> bool:
    """Whether the person may answer the memo's request for approval (approve it or ask
    for changes): the Approver role, and none of its writers."""
    user = request.user
    return (
        memo.status == MemoStatus.AWAITING_APPROVAL
        and user.has_perm("memos.approve_memo")
        and memo.author_id is not None
        and user.pk not in memo_writers(memo)
    )


def void_warning(memo: Memo) -> str:
    """What saving a change to the memo undoes, or "" when nothing."""
    if memo.status == MemoStatus.AWAITING_APPROVAL:
        return (
            "This memo awaits approval. Saving a change withdraws that request: the memo returns to draft "
            "and needs to be asked for again."
        )
    if memo.status not in VOIDS_APPROVAL:
        return ""
    when = timezone.localtime(memo.approved_at).strftime("%Y-%m-%d %H:%M") if memo.approved_at else "?"
    scheduled = (
        f", and cancels its send scheduled for {timezone.localtime(memo.scheduled_at):%Y-%m-%d %H:%M}"
        if memo.status == MemoStatus.SCHEDULED and memo.scheduled_at
        else ""
    )
    return (
        f"Saving a change voids the approval by {person_name(memo.approver)} ({when}){scheduled}: the memo "
        "returns to draft and must be approved again before it can be sent."
    )


def memo_page_context(request: HttpRequest, memo: Memo) -> dict[str, Any]:
    """What the memo page shows of the review: the request for changes to address, and
    the warning (with its confirmation box) of an edit that voids an approval."""
    asked = changes_requested(memo) if memo.status in (MemoStatus.DRAFT, MemoStatus.AWAITING_APPROVAL) else None
    return {
        "changes_requested": asked,
        "changes_requested_by": person_name(asked.actor) if asked is not None else "",
        "void_warning": void_warning(memo),
        "may_review": may_review(request, memo),
    }


def voided_message(memo: Memo) -> str:
    """What the composer is told after a save that voided an approval (`memo` as it was
    before the save)."""
    if memo.status == MemoStatus.AWAITING_APPROVAL:
        return f"“{memo.title}” is a draft again: the request for its approval was withdrawn. Ask for approval again."
    return (
        f"The approval of “{memo.title}” by {person_name(memo.approver)} is void: the memo is a draft again "
        "and must be approved again before it can be sent."
    )


class MemoReviewPages(MemoPages):
    def review_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id)
        return self._review_page(request, memo)

    def _review_page(
        self, request: HttpRequest, memo: Memo, comment: str = "", error: str = "", status: int = 200
    ) -> HttpResponse:
        conditions = memo_versions(memo)
        response = self._page(
            request,
            memo,
            "admin/memos/memo/review.html",
            f"Review “{memo.title}”",
            review=memo_review(memo, conditions),
            template_versions=conditions,
            may_review=may_review(request, memo),
            comment=comment,
            comment_max=COMMENT_MAX,
            error=error,
            changes_requested=changes_requested(memo),
            content_hash=memo_content_hash(memo),
        )
        response.status_code = status
        return response

    def request_changes_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id, "approve")
        if request.method != "POST":
            return HttpResponseRedirect(review_url(memo))
        comment = request.POST.get("comment", "")
        try:
            memo_request_changes(memo=memo, by=signed_in(request), comment=comment)
        except ApprovalRefused as exc:
            return self._review_page(request, memo, comment=comment[:COMMENT_MAX], error=str(exc), status=400)
        messages.success(request, f"“{memo.title}” is a draft again; its composer is emailed your comment.")
        return HttpResponseRedirect(memo_url(memo))

    def approve_confirm_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the confirmation (what approving freezes, who is told); POST: approve,
        refused if the memo changed since the confirmation was shown."""
        memo = self._memo(request, object_id, "approve")
        if request.method == "POST":
            # The hash of the text the confirmation showed: an approval names what its
            # approver saw, and a post without it (not from that page) approves nothing.
            reviewed = request.POST.get("content_hash", "")
            if not reviewed:
                messages.error(request, "Approve from the confirmation page: it names the text you approve.")
                return HttpResponseRedirect(review_url(memo) if memo.is_editable else memo_url(memo))
            try:
                memo_approve(memo=memo, by=signed_in(request), reviewed_hash=reviewed)
            except ApprovalRefused as exc:
                messages.error(request, str(exc))
                return HttpResponseRedirect(review_url(memo) if memo.is_editable else memo_url(memo))
            messages.success(request, f"Approved “{memo.title}”: its content and audience are frozen.")
            return HttpResponseRedirect(memo_url(memo))
        total, _ = audience_counts(memo)
        content_hash = memo_content_hash(memo)
        reviewed = request.GET.get("reviewed", "")
        return self._page(
            request,
            memo,
            "admin/memos/memo/review_confirm.html",
            f"Approve “{memo.title}”?",
            total=total,
            content_hash=content_hash,
            changed_since_review=bool(reviewed) and reviewed != content_hash,
            may_review=may_review(request, memo),
            review_url=review_url(memo),
            composers=sorted(
                {person_name(u) for u in (memo.author, memo.requested_by) if u is not None and u != request.user}
            ),
        )
