"""The memo's pages and buttons from draft to sent and after: ask for approval (the
review and approval are memo_review_pages.py's), send, schedule, pause, resume, cancel,
send again what has an unknown outcome, withdraw (a page that asks why), and start a
correction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from memo_service.memos.admin.memo_forms import ScheduleForm, WithdrawForm
from memo_service.memos.admin.memo_pages import MemoPages, memo_url
from memo_service.memos.approval import (
    ApprovalRefused,
    memo_request_approval,
)
from memo_service.memos.audience import audience_changes, audience_counts
from memo_service.memos.audit import signed_in
from memo_service.memos.compose.versions import memo_versions
from memo_service.memos.correction import CorrectionRefused, memo_correction_create
from memo_service.memos.models import MEMO_STARTABLE, MEMO_WITHDRAWABLE, Memo
from memo_service.memos.report.reports import memo_outcome_unknown
from memo_service.memos.send.control import ControlRefused, memo_cancel, memo_pause, memo_resume
from memo_service.memos.send.dispatch import AudienceChanged, DispatchRefused, memo_send_start
from memo_service.memos.send.reconcile import ResendRefused, memo_unknown_resend
from memo_service.memos.send.schedule import memo_schedule, memo_unschedule
from memo_service.memos.withdrawal import WithdrawalRefused, memo_withdraw, withdrawal_recipients


def start_send(request: HttpRequest, memo: Memo, accept_audience_changes: bool = False) -> bool:
    """Start a send and queue its dispatch; tells the admin what happened."""
    try:
        memo_send_start(memo=memo, by=signed_in(request), accept_audience_changes=accept_audience_changes)
    except AudienceChanged as exc:
        messages.error(request, f"{memo.title}: {exc} on its Send page.")
        return False
    except DispatchRefused as exc:
        messages.error(request, str(exc))
        return False
    messages.success(request, f"Sending “{memo.title}”: its deliveries are being queued.")
    return True


def _button(
    permission: str, action: Callable[..., Any], done: str
) -> Callable[[MemoPages, HttpRequest, str], HttpResponse]:
    """A button on the memo page: POST runs `action` and says how it went, in `done`
    (with the memo and what `action` returned, as n); any method returns to the memo."""

    def view(self: MemoPages, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id, permission)
        if request.method == "POST":
            try:
                result = action(memo=memo, by=signed_in(request))
                messages.success(request, done.format(memo=memo, n=result))
            except (ApprovalRefused, ControlRefused) as exc:
                messages.error(request, str(exc))
        return HttpResponseRedirect(memo_url(memo))

    return view


class MemoSendPages(MemoPages):
    def send_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id, "send")
        if request.method == "POST":
            start_send(request, memo, accept_audience_changes=request.POST.get("accept_audience_changes") == "on")
            return HttpResponseRedirect(memo_url(memo))
        total, by_country = audience_counts(memo)
        changes = audience_changes(memo) if memo.status in MEMO_STARTABLE else None
        return self._page(
            request,
            memo,
            "admin/memos/memo/send_confirm.html",
            f"Send “{memo.title}”?",
            total=total,
            by_country=by_country,
            changes=changes,
            template_versions=memo_versions(memo),
        )

    def schedule_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id, "send")
        form = ScheduleForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                memo_schedule(memo=memo, at=form.cleaned_data["send_at"], by=signed_in(request))
                messages.success(
                    request, f"“{memo.title}” will be sent at {form.cleaned_data['send_at']:%Y-%m-%d %H:%M %Z}."
                )
                return HttpResponseRedirect(memo_url(memo))
            except ApprovalRefused as exc:
                form.add_error("send_at", str(exc))
        return self._page(request, memo, "admin/memos/memo/schedule.html", f"Schedule “{memo.title}”", form=form)

    # The memo page's buttons that run one write function each (see _button).
    request_approval_view = _button(
        "change", memo_request_approval, "“{memo.title}” now awaits a second person's approval."
    )
    unschedule_view = _button(
        "send", memo_unschedule, "The scheduled send of “{memo.title}” is cancelled; it stays approved."
    )
    pause_view = _button("send", memo_pause, "Paused “{memo.title}”: nothing more goes out until you resume.")
    resume_view = _button("send", memo_resume, "Resumed “{memo.title}”: {n} queued emails go out again.")
    cancel_view = _button("send", memo_cancel, "Cancelled “{memo.title}”: {n} queued emails will not be sent.")

    def resend_unknown_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Deliveries nobody can know the fate of: how many and why; a Composer may send
        them again, accepting that some developers get the memo twice."""
        memo = self._memo(request, object_id)
        if request.method == "POST":
            if not self.has_send_permission(request, memo):
                raise PermissionDenied
            try:
                n = memo_unknown_resend(memo=memo, by=signed_in(request))
            except ResendRefused as exc:
                messages.error(request, str(exc))
                return HttpResponseRedirect(memo_url(memo))
            messages.success(request, f"{n} deliveries whose outcome was unknown are being sent again.")
            return HttpResponseRedirect(memo_url(memo))
        reasons = memo_outcome_unknown(memo)
        return self._page(
            request,
            memo,
            "admin/memos/memo/resend_unknown.html",
            f"Outcome unknown: {memo.title}",
            reasons=reasons,
            total=sum(n for _, n in reasons),
            can_send=self.has_send_permission(request, memo),
        )

    def withdraw_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Withdraw… : the page says what a withdrawal does and asks why; POST withdraws."""
        memo = self._memo(request, object_id, "send")
        if memo.status not in MEMO_WITHDRAWABLE:
            messages.error(
                request,
                f"“{memo.title}” is {memo.get_status_display()}: only a memo whose send started (sending, paused "
                "or sent) can be withdrawn.",
            )
            return HttpResponseRedirect(memo_url(memo))
        form = WithdrawForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                done = memo_withdraw(memo=memo, by=signed_in(request), reason=form.cleaned_data["reason"])
            except WithdrawalRefused as exc:
                form.add_error("reason", str(exc))
            else:
                messages.success(
                    request,
                    f"Withdrew “{memo.title}”: {done.cancelled} queued emails will not be sent, and the "
                    f"{done.notified} developers who received it are told why.",
                )
                return HttpResponseRedirect(memo_url(memo))
        return self._page(
            request,
            memo,
            "admin/memos/memo/withdraw.html",
            f"Withdraw “{memo.title}”?",
            form=form,
            recipients=withdrawal_recipients(memo).count(),
        )

    @method_decorator(require_POST)
    def correct_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Send a correction (POST): a new draft prefilled from this memo, opened at once."""
        memo = self._memo(request, object_id, "change")
        try:
            correction = memo_correction_create(memo=memo, by=signed_in(request))
        except CorrectionRefused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(memo_url(memo))
        messages.success(
            request,
            f"A correction of “{memo.title}”, prefilled from it: edit what was wrong, then ask for approval. "
            "Once it is sent, those who acknowledged the earlier memo are asked to acknowledge this one.",
        )
        return HttpResponseRedirect(memo_url(correction))
