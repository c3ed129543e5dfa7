"""The memo's admin: its configuration and change page. Its own pages come in groups by
job, each a base class of MemoAdmin: from draft to sent (memo_send_pages.py), the preview
(memo_preview.py), after the send (memo_report_pages.py) and the audience while it is
edited (memo_audience_pages.py); get_urls routes to them. The HTML is in
templates/admin/memos/memo/."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils.html import format_html

from memo_service.memos.admin.memo_audience_pages import MemoAudiencePages
from memo_service.memos.admin.memo_forms import VARIABLES_HELP, MemoForm, TranslationInline, error_places
from memo_service.memos.admin.memo_preview import MemoPreviewPage
from memo_service.memos.admin.memo_report_pages import MemoReportPages
from memo_service.memos.admin.memo_review_pages import MemoReviewPages, memo_page_context, voided_message
from memo_service.memos.admin.memo_send_pages import MemoSendPages, start_send
from memo_service.memos.approval import memo_edited
from memo_service.memos.audit import audit_record, signed_in
from memo_service.memos.compose.versions import memo_versions
from memo_service.memos.models import Memo
from memo_service.memos.report.reports import memo_outcome_unknown


@admin.register(Memo)
class MemoAdmin(MemoReviewPages, MemoSendPages, MemoPreviewPage, MemoReportPages, MemoAudiencePages):
    form = MemoForm
    inlines = [TranslationInline]
    list_display = ["title", "slug", "status", "effective_date", "ack_deadline", "scheduled_at", "updated_at"]
    list_filter = ["status"]
    search_fields = ["title", "slug"]
    prepopulated_fields = {"slug": ["title"]}
    filter_horizontal = ["include_regions", "traffic_regions"]
    actions = ["send_selected"]
    change_form_template = "admin/memos/memo/change_form.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "title",
                    "slug",
                    "status",
                    "status_reason",
                    "author",
                    "approver",
                    "approved_at",
                    "scheduled_at",
                ]
            },
        ),
        (
            "Content (English, the fallback for languages without a translation)",
            {"fields": ["subject", "html_body", "text_body"], "description": VARIABLES_HELP},
        ),
        ("Dates", {"fields": ["effective_date", "ack_deadline"]}),
        (
            "What Acknowledge means",
            {
                "fields": ["statement", "email_receipt"],
                "description": "Shown beside the Acknowledge button and recorded (hashed) with each "
                "acknowledgement; blank: a default naming the effective date and the audience's countries, in "
                "the developer's language. Write each language's in its translation below.",
            },
        ),
        (
            "Audience",
            {
                "fields": [
                    "include_countries",
                    "include_regions",
                    "exclude_countries",
                    "active_only",
                    "active_since",
                    "attribute_filters",
                    "audience_basis",
                    "traffic_countries",
                    "traffic_regions",
                    "traffic_days",
                    "traffic_min_requests",
                    "audience_summary",
                ]
            },
        ),
        (
            "Reminders (to those who have not answered)",
            {
                "fields": ["reminder_days", "reminder_subject", "reminder_html", "reminder_text"],
                "description": "Leave the templates blank for the built-in reminder: “Reminder: ” before the "
                "subject and a short note above the memo's own text, in the developer's language.",
            },
        ),
        ("Results", {"fields": ["progress", "funnel_table", "content_hash", "dispatched_at"]}),
    ]
    computed = [
        "status",
        "status_reason",
        "author",
        "approver",
        "approved_at",
        "scheduled_at",
        "audience_summary",
        "progress",
        "funnel_table",
        "content_hash",
        "dispatched_at",
    ]

    class Media:
        js = ["memos/memo_page.js"]

    def get_readonly_fields(self, request: HttpRequest, obj: Memo | None = None) -> list[str]:
        if obj is not None and not obj.is_editable:
            # A memo that has started sending is evidence: its content no longer changes.
            # cast: our fieldsets list single field names, no rows of several
            return [cast(str, f) for _, opts in self.fieldsets for f in opts["fields"]]
        return self.computed

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Memo | None = None,
    ) -> HttpResponse:
        # Show only the buttons this person may use, and a memo that can no longer
        # change as what it is: read-only, with no Save that could only be refused.
        editable = obj is None or obj.is_editable
        context.update(
            can_edit=editable and self.has_change_permission(request, obj),
            can_send=self.has_send_permission(request, obj),
            can_export=self.has_export_permission(request, obj),
        )
        if not editable:
            assert obj is not None
            context.update(
                show_save=False,
                show_save_and_continue=False,
                show_save_and_add_another=False,
                show_delete=False,
                title=f"View memo ({obj.get_status_display()})",
                readonly_reason=f"This memo is {obj.get_status_display()}: what was sent is evidence, so it "
                "can no longer change.",
            )
        elif not context["can_edit"]:
            context["readonly_reason"] = "You may read this memo; writing memos takes the Composer role."
        context["error_places"] = error_places(
            context["adminform"].form, [f.formset for f in context.get("inline_admin_formsets", [])]
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_prepopulated_fields(self, request: HttpRequest, obj: Memo | None = None) -> dict[str, Any]:
        return self.prepopulated_fields if obj is None or obj.is_editable else {}

    def save_model(self, request: HttpRequest, obj: Memo, form: Any, change: bool) -> None:
        if not change:
            obj.author = obj.last_edited_by = signed_in(request)
        super().save_model(request, obj, form, change)
        if not change:
            audit_record(actor=obj.author, action="memo.created", obj=obj)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        changed = list(form.changed_data) + [f"{fs.prefix}" for fs in formsets if fs.has_changed()]
        if change and changed and memo_edited(memo=form.instance, by=signed_in(request), fields=changed):
            messages.warning(request, voided_message(form.instance))

    @admin.display(description="progress")
    def progress(self, memo: Memo) -> str:
        if memo.pk is None or memo.is_editable:
            return "Not sent yet."
        return render_to_string("admin/memos/memo/_send_progress.html", {"memo": memo})

    @admin.display(description="funnel")
    def funnel_table(self, memo: Memo) -> str:
        if memo.pk is None or memo.dispatched_at is None and memo.status != Memo.Status.SENDING:
            return "Not sent yet."
        return format_html(
            '<a href="{}">Dashboard: funnel per country and acknowledgements over time</a>',
            reverse("admin:memos_memo_dashboard", args=[memo.pk]),
        )

    @admin.action(description="Send selected memos", permissions=["send"])
    def send_selected(self, request: HttpRequest, queryset: QuerySet[Memo]) -> None:
        for memo in queryset:
            start_send(request, memo)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        memo = Memo.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        if memo is not None:
            # How many deliveries nobody can know the fate of (their page offers a resend).
            extra_context = {**(extra_context or {}), "outcome_unknown": sum(n for _, n in memo_outcome_unknown(memo))}
            extra_context.update(memo_page_context(request, memo))  # the review's comment, the void warning
            if request.method == "GET":
                # Every version the templates can produce, for whoever approves or sends it.
                extra_context["template_versions"] = memo_versions(memo)
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        routes = {
            "send": self.send_view,
            "review": self.review_view,
            "approve": self.approve_confirm_view,
            "request-changes": self.request_changes_view,
            "request-approval": self.request_approval_view,
            "schedule": self.schedule_view,
            "unschedule": self.unschedule_view,
            "preview": self.preview_view,
            "dashboard": self.dashboard_view,
            "progress": self.progress_view,
            "audience": self.audience_view,
            "explain": self.explain_view,
            "verify": self.verify_view,
            "pause": self.pause_view,
            "resume": self.resume_view,
            "cancel": self.cancel_view,
            "resend-unknown": self.resend_unknown_view,
            "unanswered": self.unanswered_view,
            "remind": self.remind_view,
            "withdraw": self.withdraw_view,
            "correct": self.correct_view,
        }
        return [
            *(
                path(f"<path:object_id>/{name}/", view(fn), name=f"memos_memo_{name.replace('-', '_')}")
                for name, fn in routes.items()
            ),
            path("<path:object_id>/evidence.<str:fmt>", view(self.evidence_view), name="memos_memo_evidence"),
            path("audience/", view(self.audience_rules_view), name="memos_memo_audience_rules"),
            *super().get_urls(),
        ]
