"""The memo's pages after the send: its progress, the dashboard and its reminder, who has
not answered, and the evidence (export and verification)."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from memo_service.memos.admin.memo_pages import MemoPages, memo_url
from memo_service.memos.audit import signed_in
from memo_service.memos.cases.opening import cases_open_of
from memo_service.memos.evidence.export import evidence_csv, evidence_json
from memo_service.memos.evidence.verify import evidence_verify_published
from memo_service.memos.models import MEMO_MAY_SEND, Memo
from memo_service.memos.reminders import RemindRefused, memo_remind_now
from memo_service.memos.report.reports import (
    DASHBOARD_COLUMNS,
    UNANSWERED_PAGE,
    ack_chart_svg,
    dashboard_rows,
    memo_funnel,
    memo_progress,
    unanswered_csv,
    unanswered_rows,
)


class MemoReportPages(MemoPages):
    def dashboard_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id)
        funnel = memo_funnel(memo)
        unanswered = Paginator(unanswered_rows(memo), UNANSWERED_PAGE).get_page(request.GET.get("page"))
        return self._page(
            request,
            memo,
            "admin/memos/memo/dashboard.html",
            f"Dashboard: {memo.title}",
            funnel=funnel,
            rows=dashboard_rows(memo, funnel),
            chart=mark_safe(ack_chart_svg(memo)),
            columns=DASHBOARD_COLUMNS,
            progress=memo_progress(memo),
            open_cases=cases_open_of(memo),
            now=timezone.now(),
            unanswered=unanswered,
            not_sent=Paginator(unanswered_rows(memo, sent=False), UNANSWERED_PAGE).get_page(1),
            can_export=self.has_export_permission(request, memo),
            can_remind=self.has_send_permission(request, memo)
            and memo.status in MEMO_MAY_SEND
            and memo.dispatched_at is not None,
        )

    def remind_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The dashboard's "Send a reminder now" (POST): to those who still have to answer."""
        memo = self._memo(request, object_id, "send")
        if request.method == "POST":
            try:
                n = memo_remind_now(memo=memo, by=signed_in(request))
                messages.success(
                    request, f"A reminder of “{memo.title}” is going to {n} developers who have not answered."
                )
            except RemindRefused as exc:
                messages.error(request, str(exc))
        return HttpResponseRedirect(reverse("admin:memos_memo_dashboard", args=[memo.pk]))

    def unanswered_view(self, request: HttpRequest, object_id: str) -> StreamingHttpResponse:
        """Who has not answered yet, as CSV (addresses: the evidence export's permission)."""
        memo = self._memo(request, object_id, "export")
        response = StreamingHttpResponse(unanswered_csv(memo), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="not-answered-{memo.slug}.csv"'
        return response

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        return JsonResponse(memo_progress(self._memo(request, object_id)))

    def evidence_view(self, request: HttpRequest, object_id: str, fmt: str) -> HttpResponse | StreamingHttpResponse:
        memo = self._memo(request, object_id, "export")
        if fmt == "json" and not (result := evidence_verify_published(memo)).ok:
            # The evidence file is what an auditor trusts: never one that does not verify.
            messages.error(request, f"Not exported: {result.summary()}.")
            return HttpResponseRedirect(memo_url(memo))
        return _evidence_response(memo, fmt)

    def verify_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id)
        result = evidence_verify_published(memo)
        summary = result.summary()
        (messages.success if result.ok else messages.error)(request, summary[:1].upper() + summary[1:] + ".")
        return HttpResponseRedirect(memo_url(memo))


def _evidence_response(memo: Memo, fmt: str) -> StreamingHttpResponse:
    if fmt not in ("csv", "json"):
        raise Http404("evidence comes as .csv or .json")
    lines = evidence_csv(memo) if fmt == "csv" else evidence_json(memo)
    response = StreamingHttpResponse(
        lines, content_type="text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="evidence-{memo.slug}.{fmt}"'
    return response
