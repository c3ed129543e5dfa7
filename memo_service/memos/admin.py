from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from memo_service.memos import rendering, sandbox
from memo_service.memos.audience import audience_counts
from memo_service.memos.dispatch import DispatchRefused, memo_send_start
from memo_service.memos.disputes import DisputeInvalid, dispute_resolve
from memo_service.memos.models import (
    Acknowledgement, AuditEvent, Delivery, DeliveryEvent, Dispute, DisputeResolution, Memo, MemoTranslation,
    WebhookAttempt, WebhookEndpoint, WebhookMessage,
)
from memo_service.memos.evidence import evidence_verify
from memo_service.memos.reports import evidence_csv, evidence_json, memo_funnel
from memo_service.memos.tasks import dispatch_memo

VARIABLES_HELP = format_html(
    "Jinja2 templates. The subject and text are plain text; the HTML is autoescaped. "
    "Each is checked at save by a trial render for a sample developer. Variables:<ul>{}</ul>",
    format_html_join("", "<li><code>{{{{ {} }}}}</code> — {}</li>", rendering.TEMPLATE_VARIABLES.items()),
)


def _add_template_errors(form: forms.ModelForm, memo: Memo, language: str) -> None:
    fields = sandbox.TEMPLATE_FIELDS + sandbox.REMINDER_FIELDS
    sources = {f: form.cleaned_data[f] for f in fields if form.cleaned_data.get(f)}
    if not sources:
        return
    for field, error in rendering.templates_check(memo=memo, sources=sources, language=language).items():
        form.add_error(field, error)


class MemoForm(forms.ModelForm):
    class Meta:
        model = Memo
        fields = "__all__"

    def clean_reminder_days(self) -> list[int]:
        days = self.cleaned_data.get("reminder_days") or []
        if not isinstance(days, list) or not all(isinstance(d, int) and 0 < d <= 365 for d in days):
            raise forms.ValidationError("A list of whole days before the deadline, each 1 to 365, e.g. [7, 1].")
        if len(set(days)) != len(days):
            raise forms.ValidationError("Each day may appear once.")
        return sorted(days, reverse=True)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.instance.pk is not None:
            # The admin saves in one transaction: this lock holds until the memo and its
            # translations are written, so a send cannot start in between.
            status = Memo.objects.select_for_update().filter(pk=self.instance.pk).values_list("status", flat=True).first()
            if status != Memo.Status.DRAFT:
                raise forms.ValidationError(
                    f"This memo is {status} now (it started while you were editing): it can no longer change."
                )
        context_memo = Memo(
            title=cleaned.get("title", ""),
            effective_date=cleaned.get("effective_date"),
            ack_deadline=cleaned.get("ack_deadline"),
        )
        _add_template_errors(self, context_memo, rendering.FALLBACK_LANGUAGE)
        return cleaned


class TranslationForm(forms.ModelForm):
    parent_memo: Memo  # set by TranslationFormSet: the memo as the main form cleaned it

    class Meta:
        model = MemoTranslation
        fields = ["language", "subject", "html_body", "text_body", "reminder_subject", "reminder_html", "reminder_text"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        language = cleaned.get("language")
        if language == rendering.FALLBACK_LANGUAGE:
            self.add_error("language", "English is the memo's own text; add other languages here.")
        elif language:
            _add_template_errors(self, self.parent_memo, language)
        return cleaned


class TranslationFormSet(forms.BaseInlineFormSet):
    def _construct_form(self, i: int, **kwargs: Any) -> forms.Form:
        form = super()._construct_form(i, **kwargs)
        form.parent_memo = self.instance
        return form


class TranslationInline(admin.StackedInline):
    model = MemoTranslation
    form = TranslationForm
    formset = TranslationFormSet
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        return (obj is None or obj.is_editable) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        return (obj is None or obj.is_editable) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        return (obj is None or obj.is_editable) and super().has_delete_permission(request, obj)


def _send(request: HttpRequest, memo: Memo) -> bool:
    """Start a send and queue its dispatch; tells the admin what happened."""
    try:
        memo_send_start(memo=memo)
    except DispatchRefused as exc:
        messages.error(request, str(exc))
        return False
    dispatch_memo.delay_on_commit(memo.pk)
    messages.success(request, f"Sending “{memo.title}”: its deliveries are being queued.")
    return True


@admin.register(Memo)
class MemoAdmin(admin.ModelAdmin):
    form = MemoForm
    inlines = [TranslationInline]
    list_display = ["title", "slug", "status", "effective_date", "ack_deadline", "updated_at"]
    list_filter = ["status"]
    search_fields = ["title", "slug"]
    prepopulated_fields = {"slug": ["title"]}
    filter_horizontal = ["include_regions"]
    actions = ["send_selected"]
    change_form_template = "admin/memos/memo/change_form.html"
    fieldsets = [
        (None, {"fields": ["title", "slug", "status"]}),
        ("Content (English, the fallback for languages without a translation)",
         {"fields": ["subject", "html_body", "text_body"], "description": VARIABLES_HELP}),
        ("Dates", {"fields": ["effective_date", "ack_deadline"]}),
        ("Audience", {"fields": ["include_countries", "include_regions", "exclude_countries",
                                 "active_only", "audience_summary"]}),
        ("Reminders (to those who have not answered)",
         {"fields": ["reminder_days", "reminder_subject", "reminder_html", "reminder_text"],
          "description": "Leave the templates blank for the built-in reminder: “Reminder: ” before the "
                         "subject and a short note above the memo's own text, in the developer's language."}),
        ("Results", {"fields": ["funnel_table", "content_hash", "dispatched_at"]}),
    ]
    computed = ["status", "audience_summary", "funnel_table", "content_hash", "dispatched_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Memo | None = None) -> list[str]:
        if obj is not None and not obj.is_editable:
            # A memo that has started sending is evidence: its content no longer changes.
            return [f for _, opts in self.fieldsets for f in opts["fields"]]
        return self.computed

    def get_prepopulated_fields(self, request: HttpRequest, obj: Memo | None = None) -> dict[str, Any]:
        return self.prepopulated_fields if obj is None or obj.is_editable else {}

    def save_model(self, request: HttpRequest, obj: Memo, form: Any, change: bool) -> None:
        if not change:
            obj.author = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="audience now")
    def audience_summary(self, memo: Memo) -> str:
        if memo.pk is None:
            return "Save the memo to see how many developers its audience holds."
        total, by_country = audience_counts(memo)
        rows = format_html_join("", "<tr><td>{} {}</td><td>{}</td></tr>", by_country)
        return format_html(
            "<strong>{} developers</strong><table><tr><th>country</th><th>developers</th></tr>{}</table>",
            total, rows,
        )

    @admin.display(description="funnel")
    def funnel_table(self, memo: Memo) -> str:
        if memo.pk is None or memo.status == Memo.Status.DRAFT:
            return "Not sent yet."
        funnel = memo_funnel(memo)
        columns = ["targeted", "sent", "delivered", "bounced", "failed", "acknowledged",
                   "acknowledged_suspected", "disputed", "needs_help"]
        head = format_html_join("", "<th>{}</th>", ((c,) for c in columns))
        total = format_html_join("", "<td><strong>{}</strong></td>", ((funnel[c],) for c in columns))
        rows = format_html_join(
            "", "<tr><td>{}</td>{}</tr>",
            ((code, format_html_join("", "<td>{}</td>", ((row[c],) for c in columns)))
             for code, row in funnel["by_country"].items()),
        )
        return format_html(
            "<table><tr><th>country</th>{}</tr><tr><td><strong>all</strong></td>{}</tr>{}</table>",
            head, total, rows,
        )

    @admin.action(description="Send selected memos")
    def send_selected(self, request: HttpRequest, queryset: QuerySet[Memo]) -> None:
        for memo in queryset:
            _send(request, memo)

    def get_urls(self) -> list[Any]:
        return [
            path("<path:object_id>/send/", self.admin_site.admin_view(self.send_view), name="memos_memo_send"),
            path("<path:object_id>/evidence.<str:fmt>", self.admin_site.admin_view(self.evidence_view),
                 name="memos_memo_evidence"),
            path("<path:object_id>/verify/", self.admin_site.admin_view(self.verify_view), name="memos_memo_verify"),
            *super().get_urls(),
        ]

    def evidence_view(self, request: HttpRequest, object_id: str, fmt: str) -> HttpResponse:
        memo = get_object_or_404(Memo, pk=object_id)
        if not self.has_view_permission(request, memo):
            return HttpResponse(status=403)
        return _evidence_response(memo, fmt)

    def verify_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = get_object_or_404(Memo, pk=object_id)
        if not self.has_view_permission(request, memo):
            return HttpResponse(status=403)
        result = evidence_verify(memo)
        if result.ok:
            messages.success(request, f"Evidence verifies: {result.records} records, chain intact.")
        else:
            messages.error(request, f"Evidence does NOT verify: {result.problem}")
        return HttpResponseRedirect(reverse("admin:memos_memo_change", args=[memo.pk]))

    def send_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = get_object_or_404(Memo, pk=object_id)
        if not self.has_change_permission(request, memo):
            return HttpResponse(status=403)
        change_url = reverse("admin:memos_memo_change", args=[memo.pk])
        if request.method == "POST":
            _send(request, memo)
            return HttpResponseRedirect(change_url)
        total, by_country = audience_counts(memo)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "memo": memo,
            "total": total,
            "by_country": by_country,
            "change_url": change_url,
            "title": f"Send “{memo.title}”?",
        }
        return TemplateResponse(request, "admin/memos/memo/send_confirm.html", context)


def _evidence_response(memo: Memo, fmt: str) -> HttpResponse:
    if fmt not in ("csv", "json"):
        raise Http404("evidence comes as .csv or .json")
    lines = evidence_csv(memo) if fmt == "csv" else evidence_json(memo)
    response = StreamingHttpResponse(
        lines, content_type="text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="evidence-{memo.slug}.{fmt}"'
    return response


class ReadOnlyAdmin(admin.ModelAdmin):
    """Evidence and provider records: visible to admins, written only by the flow."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "memo", "developer", "kind", "status", "sent_at", "last_error"]
    list_filter = ["status", "kind", "memo"]
    list_select_related = ["memo", "developer"]
    search_fields = ["=developer__external_id", "=provider_message_id"]


@admin.register(DeliveryEvent)
class DeliveryEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "provider", "event_type", "delivery_id", "occurred_at", "received_at"]
    list_filter = ["provider", "event_type"]


@admin.register(Acknowledgement)
class AcknowledgementAdmin(ReadOnlyAdmin):
    list_display = ["id", "memo", "developer", "response", "created_at", "suspected_automation", "ip_address"]
    list_filter = ["response", "suspected_automation", "memo"]
    list_select_related = ["memo", "developer"]
    search_fields = ["=developer__external_id"]


class DisputeStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "open"), ("resolved", "resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(resolution__isnull=self.value() == "open")
        return queryset


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdmin):
    """The queue of "my region is wrong" answers; resolve them with the actions."""

    list_display = ["developer", "memo", "recorded_country", "country_claimed", "comment", "created_at", "outcome"]
    list_filter = [DisputeStateFilter, "memo"]
    list_select_related = ["memo", "developer", "resolution"]
    actions = ["correct_region", "confirm_region"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).filter(response=Acknowledgement.Response.DISPUTES_REGION)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Resolving is a change to the developer; the answer itself stays as it was.
        return request.user.has_perm("developers.change_developer")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Acknowledgement._meta.fields]

    @admin.display(description="recorded country")
    def recorded_country(self, answer: Acknowledgement) -> str:
        return answer.developer.country.code

    @admin.display(description="outcome")
    def outcome(self, answer: Acknowledgement) -> str:
        resolution = getattr(answer, "resolution", None)
        if resolution is None:
            return "open"
        return resolution.get_outcome_display() + (" (exempt from the memo)" if resolution.exempt else "")

    def _resolve(self, request: HttpRequest, queryset: QuerySet[Any], outcome: str) -> None:
        done = 0
        for answer in queryset:
            try:
                dispute_resolve(answer=answer, outcome=outcome, by=request.user)
                done += 1
            except DisputeInvalid as exc:
                messages.warning(request, str(exc))
        if done:
            messages.success(request, f"Resolved {done} disputes.")

    @admin.action(description="Correct the region to the claimed country", permissions=["change"])
    def correct_region(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._resolve(request, queryset, DisputeResolution.Outcome.CORRECTED)

    @admin.action(description="Confirm the recorded region", permissions=["change"])
    def confirm_region(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._resolve(request, queryset, DisputeResolution.Outcome.CONFIRMED)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "action", "object_type", "object_id", "detail"]
    list_filter = ["action"]


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")
    events = forms.MultipleChoiceField(choices=WebhookEndpoint.Event.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "events", "secret", "is_active"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["url", "events", "is_active", "created_at"]


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["at", "status_code", "error", "duration_ms"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookMessage)
class WebhookMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "event", "endpoint", "status", "attempts", "next_attempt_at", "created_at", "delivered_at"]
    list_filter = ["status", "event"]
    inlines = [WebhookAttemptInline]
