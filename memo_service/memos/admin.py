from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from django import forms
from django.apps import apps
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime, FilteredSelectMultiple
from django.core.exceptions import PermissionDenied
from django.core.mail import EmailMultiAlternatives
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django_countries import countries

from memo_service.admin_paging import CappedCountPaginator
from memo_service.developers.models import Developer, Region
from memo_service.memos import (
    admin_users,  # noqa: F401  (registers the user pages)
    rendering,
    sandbox,
)
from memo_service.memos.approval import (
    ApprovalRefused,
    memo_approve,
    memo_edited,
    memo_request_approval,
    memo_schedule,
    memo_unschedule,
)
from memo_service.memos.audience import audience_changes, audience_counts, audience_explain, memo_audience
from memo_service.memos.audit import audit_record
from memo_service.memos.control import ControlRefused, memo_cancel, memo_pause, memo_resume
from memo_service.memos.dispatch import AudienceChanged, DispatchRefused, memo_send_start
from memo_service.memos.disputes import DisputeInvalid, dispute_resolve
from memo_service.memos.evidence import evidence_verify
from memo_service.memos.models import (
    EDITABLE_STATUSES,
    Acknowledgement,
    AuditEvent,
    Delivery,
    DeliveryEvent,
    Dispute,
    DisputeResolution,
    Memo,
    MemoTranslation,
    SendLease,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)
from memo_service.memos.reconcile import memo_unknown_resend
from memo_service.memos.reminders import RemindRefused, memo_remind_now
from memo_service.memos.reports import (
    DASHBOARD_COLUMNS,
    UNANSWERED_PAGE,
    ack_chart_svg,
    dashboard_rows,
    evidence_csv,
    evidence_json,
    memo_funnel,
    memo_outcome_unknown,
    memo_progress,
    unanswered_csv,
    unanswered_rows,
)
from memo_service.memos.versions import memo_versions
from memo_service.netguard import TargetRefused, target_address

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


def _attribute_filters(value: Any) -> dict[str, Any]:
    """A JSON object of attribute names and plain values; names are used in a database
    lookup, so they are plain words (no "__" that would turn into a lookup of its own)."""
    value = value or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k.isidentifier() and "__" not in k and isinstance(v, (str, int, float, bool))
        for k, v in value.items()
    ):
        raise forms.ValidationError('A JSON object of attribute names and values, e.g. {"plan": "pro"}.')
    return value


# What a refused button says (refusals.py shows it inside the admin): who may do it.
ROLE_NEEDED = {
    "view": "Reading memos takes the Viewer, Composer or Approver role.",
    "change": "Writing memos and asking for approval take the Composer role.",
    "send": "Sending, scheduling, pausing, resuming and cancelling memos take the Composer role.",
    "approve": "Approving memos takes the Approver role, and someone other than the memo's author or last editor.",
    "export": "The evidence holds addresses, IP addresses and user agents: exporting it takes the Composer or "
    "Approver role, not Viewer.",
}


class LabelledSplitDateTime(AdminSplitDateTime):
    """The admin's date and time boxes, each with a label of its own (the admin's are
    bare text before each box, which names neither to a screen reader or a test)."""

    def __init__(self, what: str, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.what = what

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        for sub, part in zip(context["widget"]["subwidgets"], ("date", f"time ({settings.TIME_ZONE})"), strict=True):
            sub["attrs"]["aria-label"] = f"{self.what}: {part}"
        return context


class MemoForm(forms.ModelForm):
    class Meta:
        model = Memo
        fields = "__all__"
        # 249 countries: the two-list picker with its filter box, not a Ctrl-click list.
        widgets = {
            "include_countries": FilteredSelectMultiple("countries", is_stacked=False),
            "exclude_countries": FilteredSelectMultiple("countries", is_stacked=False),
            "ack_deadline": LabelledSplitDateTime("Acknowledgement deadline"),
        }

    def clean_attribute_filters(self) -> dict[str, Any]:
        return _attribute_filters(self.cleaned_data.get("attribute_filters"))

    def clean_reminder_days(self) -> list[int]:
        days = self.cleaned_data.get("reminder_days") or []
        if not isinstance(days, list) or not all(isinstance(d, int) and 0 < d <= 365 for d in days):
            raise forms.ValidationError("A list of whole days before the deadline, each 1 to 365, e.g. [7, 1].")
        if len(set(days)) != len(days):
            raise forms.ValidationError("Each day may appear once.")
        return sorted(days, reverse=True)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # BaseModelForm.clean returns cleaned_data
        if self.instance.pk is not None:
            # The admin saves in one transaction: this lock holds until the memo and its
            # translations are written, so a send cannot start in between.
            status = (
                Memo.objects.select_for_update().filter(pk=self.instance.pk).values_list("status", flat=True).first()
            )
            if status not in EDITABLE_STATUSES:
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


def _error_places(form: forms.BaseForm, formsets: list[Any]) -> list[tuple[str, str, str]]:
    """(where, field id, first error) for each field in error, the translations' too: the
    banner over the form says where they are (a translation's can be far down)."""

    def places(f: forms.BaseForm, where: str) -> list[tuple[str, str, str]]:
        return [
            (
                f"{where}{f.fields[name].label or name}",
                f.fields[name].widget.attrs.get("id") or f"id_{f.add_prefix(name)}",
                str(errors[0]),
            )
            for name, errors in f.errors.items()
            if name in f.fields
        ]

    found = places(form, "")
    for formset in formsets:
        for n, sub in enumerate(formset.forms, start=1):
            if sub.is_bound and sub.errors:
                language = sub.data.get(sub.add_prefix("language")) or f"#{n}"
                found += places(sub, f"Translation {language} › ")
    return found


class TranslationForm(forms.ModelForm):
    parent_memo: Memo  # set by TranslationFormSet: the memo as the main form cleaned it

    class Meta:
        model = MemoTranslation
        fields = ["language", "subject", "html_body", "text_body", "reminder_subject", "reminder_html", "reminder_text"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # BaseModelForm.clean returns cleaned_data
        language = cleaned.get("language")
        if language == rendering.FALLBACK_LANGUAGE:
            self.add_error("language", "English is the memo's own text; add other languages here.")
        elif language:
            _add_template_errors(self, self.parent_memo, language)
        return cleaned


class TranslationFormSet(forms.BaseInlineFormSet):
    def _construct_form(self, i: int, **kwargs: Any) -> forms.Form:
        form = super()._construct_form(i, **kwargs)  # type: ignore[misc]  # BaseFormSet's, missing from django-stubs
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


# The preview's developer list: enough to pick from, small enough to read; the search
# box finds anyone else in the audience.
PREVIEW_CHOICES = 50


def _memo_url(memo: Memo) -> str:
    return reverse("admin:memos_memo_change", args=[memo.pk])


def _start_send(request: HttpRequest, memo: Memo, accept_audience_changes: bool = False) -> bool:
    """Start a send and queue its dispatch; tells the admin what happened."""
    try:
        memo_send_start(memo=memo, by=request.user, accept_audience_changes=accept_audience_changes)
    except AudienceChanged as exc:
        messages.error(request, f"{memo.title}: {exc} on its Send page.")
        return False
    except DispatchRefused as exc:
        messages.error(request, str(exc))
        return False
    messages.success(request, f"Sending “{memo.title}”: its deliveries are being queued.")
    return True


class AudienceRulesForm(forms.Form):
    """The audience fields of the memo form, read while the admin edits them."""

    include_countries = forms.MultipleChoiceField(choices=list(countries), required=False)
    include_regions = forms.ModelMultipleChoiceField(queryset=Region.objects.all(), required=False)
    exclude_countries = forms.MultipleChoiceField(choices=list(countries), required=False)
    active_only = forms.BooleanField(required=False)
    active_since = forms.DateField(required=False)
    attribute_filters = forms.JSONField(required=False)

    def clean_attribute_filters(self) -> dict[str, Any]:
        return _attribute_filters(self.cleaned_data.get("attribute_filters"))


class ScheduleForm(forms.Form):
    send_at = forms.SplitDateTimeField(
        widget=LabelledSplitDateTime("Send at"),
        help_text=f"In {settings.TIME_ZONE}. Kept in the database: restarts do not lose it.",
    )


@admin.register(Memo)
class MemoAdmin(admin.ModelAdmin):
    form = MemoForm
    inlines = [TranslationInline]
    list_display = ["title", "slug", "status", "effective_date", "ack_deadline", "scheduled_at", "updated_at"]
    list_filter = ["status"]
    search_fields = ["title", "slug"]
    prepopulated_fields = {"slug": ["title"]}
    filter_horizontal = ["include_regions"]
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
                    "pause_reason",
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
            "Audience",
            {
                "fields": [
                    "include_countries",
                    "include_regions",
                    "exclude_countries",
                    "active_only",
                    "active_since",
                    "attribute_filters",
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
        "pause_reason",
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
        context["error_places"] = _error_places(
            context["adminform"].form, [f.formset for f in context.get("inline_admin_formsets", [])]
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_prepopulated_fields(self, request: HttpRequest, obj: Memo | None = None) -> dict[str, Any]:
        return self.prepopulated_fields if obj is None or obj.is_editable else {}

    def save_model(self, request: HttpRequest, obj: Memo, form: Any, change: bool) -> None:
        if not change:
            assert request.user.is_authenticated  # the admin lets in only signed-in staff
            obj.author = obj.last_edited_by = request.user
        super().save_model(request, obj, form, change)
        if not change:
            audit_record(actor=request.user, action="memo.created", obj=obj)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        changed = list(form.changed_data) + [f"{fs.prefix}" for fs in formsets if fs.has_changed()]
        if change and changed:
            memo_edited(memo=form.instance, by=request.user, fields=changed)

    @admin.display(description="audience now")
    def audience_summary(self, memo: Memo) -> str:
        if memo.pk is None:  # counted by the page's script from the rules as they are typed
            return format_html(
                '<div id="audience-summary" data-url="{}"><strong>…</strong></div>',
                reverse("admin:memos_memo_audience_rules"),
            )
        total, by_country = audience_counts(memo)
        rows = format_html_join("", "<tr><td>{} {}</td><td>{}</td></tr>", by_country)
        explain = reverse("admin:memos_memo_explain", args=[memo.pk])
        return format_html(
            '<div id="audience-summary" data-url="{}" data-saved="1"><strong>{} developers</strong>'
            "<table><tr><th>country</th><th>developers</th></tr>{}</table></div>"
            '<p><label>Why is a developer included? <input id="explain-id" placeholder="external id" data-url="{}"></label>'
            ' <span id="explain-result"></span></p>',
            reverse("admin:memos_memo_audience", args=[memo.pk]),
            total,
            rows,
            explain,
        )

    @admin.display(description="progress")
    def progress(self, memo: Memo) -> str:
        if memo.pk is None or memo.is_editable:
            return "Not sent yet."
        return format_html(
            '<div id="send-progress" data-url="{}"><progress max="100" value="0" style="width: 24em"></progress> '
            '<span class="percent">…</span><div class="counts"></div></div>',
            reverse("admin:memos_memo_progress", args=[memo.pk]),
        )

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
            _start_send(request, memo)

    def has_send_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        return request.user.has_perm("memos.send_memo")

    def has_approve_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        return request.user.has_perm("memos.approve_memo")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        memo = Memo.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        if memo is not None:
            # How many deliveries nobody can know the fate of (their page offers a resend).
            extra_context = {**(extra_context or {}), "outcome_unknown": sum(n for _, n in memo_outcome_unknown(memo))}
            if request.method == "GET":
                # Every version the templates can produce, for whoever approves or sends it.
                extra_context["template_versions"] = memo_versions(memo)
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        routes = {
            "send": self.send_view,
            "approve": self.approve_view,
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

    def _memo(self, request: HttpRequest, object_id: str, permission: str = "view") -> Memo:
        memo = get_object_or_404(Memo, pk=object_id)
        if not getattr(self, f"has_{permission}_permission")(request, memo):
            raise PermissionDenied(ROLE_NEEDED[permission])
        return memo

    def _page(self, request: HttpRequest, memo: Memo, template: str, title: str, **context: Any) -> TemplateResponse:
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "memo": memo,
                "original": memo,
                "change_url": _memo_url(memo),
                "title": title,
                **context,
            },
        )

    def send_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id, "send")
        if request.method == "POST":
            _start_send(request, memo, accept_audience_changes=request.POST.get("accept_audience_changes") == "on")
            return HttpResponseRedirect(_memo_url(memo))
        total, by_country = audience_counts(memo)
        changes = audience_changes(memo) if memo.status in [Memo.Status.APPROVED, Memo.Status.SCHEDULED] else None
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
                memo_schedule(memo=memo, at=form.cleaned_data["send_at"], by=request.user)
                messages.success(
                    request, f"“{memo.title}” will be sent at {form.cleaned_data['send_at']:%Y-%m-%d %H:%M %Z}."
                )
                return HttpResponseRedirect(_memo_url(memo))
            except ApprovalRefused as exc:
                form.add_error("send_at", str(exc))
        return self._page(request, memo, "admin/memos/memo/schedule.html", f"Schedule “{memo.title}”", form=form)

    def _act(
        self, request: HttpRequest, object_id: str, permission: str, action: Callable[..., Any], done: str
    ) -> HttpResponse:
        """A button on the memo page: POST runs one write function and says how it went."""
        memo = self._memo(request, object_id, permission)
        if request.method == "POST":
            try:
                result = action(memo=memo, by=request.user)
                messages.success(request, done.format(memo=memo, n=result))
            except (ApprovalRefused, ControlRefused) as exc:
                messages.error(request, str(exc))
        return HttpResponseRedirect(_memo_url(memo))

    def request_approval_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._act(
            request, object_id, "change", memo_request_approval, "“{memo.title}” now awaits a second person's approval."
        )

    def approve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._act(
            request, object_id, "approve", memo_approve, "Approved “{memo.title}”: its content and audience are frozen."
        )

    def unschedule_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._act(
            request,
            object_id,
            "send",
            memo_unschedule,
            "The scheduled send of “{memo.title}” is cancelled; it stays approved.",
        )

    def pause_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._act(
            request, object_id, "send", memo_pause, "Paused “{memo.title}”: nothing more goes out until you resume."
        )

    def resume_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._act(
            request, object_id, "send", memo_resume, "Resumed “{memo.title}”: {n} queued emails go out again."
        )

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._act(
            request, object_id, "send", memo_cancel, "Cancelled “{memo.title}”: {n} queued emails will not be sent."
        )

    def resend_unknown_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Deliveries nobody can know the fate of: how many and why; a Composer may send
        them again, accepting that some developers get the memo twice."""
        memo = self._memo(request, object_id)
        if request.method == "POST":
            if not self.has_send_permission(request, memo):
                raise PermissionDenied
            n = memo_unknown_resend(memo=memo, by=request.user)
            messages.success(request, f"{n} deliveries whose outcome was unknown are being sent again.")
            return HttpResponseRedirect(_memo_url(memo))
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

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id)
        languages = [rendering.FALLBACK_LANGUAGE, *(t.language for t in memo.translations.all())]
        query = request.POST if request.method == "POST" else request.GET
        params: Mapping[str, Any] = query  # the request's, or them with a developer picked below
        language = params.get("language") if params.get("language") in languages else None
        q = params.get("q", "").strip()[:100]
        audience = memo_audience(memo)
        if q:
            audience = audience.filter(Q(external_id__icontains=q) | Q(name__icontains=q) | Q(email__icontains=q))
        sample = list(audience.order_by("id")[:PREVIEW_CHOICES])
        if q and sample and params.get("developer") not in {d.external_id for d in sample}:
            params = {**query.dict(), "developer": sample[0].external_id}  # show the first match
        developer = next((d for d in sample if d.external_id == params.get("developer")), None)
        if developer is None and params.get("developer"):
            developer = Developer.objects.filter(external_id=params["developer"]).first()
        developer = developer or (sample[0] if sample else None)
        email = error = None
        if developer is not None:
            context = rendering.developer_context(developer)
            if language:
                context["language"] = language
            try:
                # A dead link of the real one's shape: a preview must not let anyone answer
                # for the developer, nor let the template see it is a preview.
                used, email = rendering.MemoRenderer(memo).render(
                    context, rendering.inert_ack_url(memo.pk, developer.pk)
                )
                language = used
            except Exception as exc:  # shown to the admin, with its line
                error = f"line {sandbox.template_line(exc) or '?'}: {sandbox.describe(exc)}"
        if request.method == "POST" and email is not None:
            if not self.has_send_permission(request, memo):
                raise PermissionDenied("Sending a test email takes the Composer role.")
            assert request.user.is_authenticated  # the admin lets in only signed-in staff
            if not request.user.email:
                messages.error(request, "Your account has no email address to send the test to.")
            else:
                EmailMultiAlternatives(
                    subject=f"[TEST] {email.subject}",
                    body=email.text,
                    to=[request.user.email],
                    alternatives=[(email.html, "text/html")],
                ).send()
                audit_record(
                    actor=request.user,
                    action="memo.test_sent",
                    obj=memo,
                    developer=developer.external_id if developer else None,
                    language=language,
                )
                messages.success(request, f"Test sent to {request.user.email}.")
        return self._page(
            request,
            memo,
            "admin/memos/memo/preview.html",
            f"Preview “{memo.title}”",
            sample=sample,
            developer=developer,
            languages=languages,
            language=language,
            email=email,
            error=error,
            q=q,
            can_send=self.has_send_permission(request, memo),
        )

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
            unanswered=unanswered,
            can_export=self.has_export_permission(request, memo),
            can_remind=self.has_send_permission(request, memo)
            and memo.status in (Memo.Status.SENDING, Memo.Status.SENT)
            and memo.dispatched_at is not None,
        )

    def remind_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The dashboard's "Send a reminder now" (POST): to those who still have to answer."""
        memo = self._memo(request, object_id, "send")
        if request.method == "POST":
            try:
                n = memo_remind_now(memo=memo, by=request.user)
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

    def audience_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The audience count for the rules as they stand in the form, saved or not."""
        return self._audience_json(request, self._memo(request, object_id))

    def audience_rules_view(self, request: HttpRequest) -> JsonResponse:
        """The same for a memo not saved yet: the rules are all there is."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return self._audience_json(request, Memo())

    def _audience_json(self, request: HttpRequest, memo: Memo) -> JsonResponse:
        regions: list[Region] | None = None if memo.pk else []
        if "rules" in request.GET:
            form = AudienceRulesForm(request.GET)
            if not form.is_valid():
                return JsonResponse({"errors": form.errors}, status=400)
            data = form.cleaned_data
            memo = Memo(
                include_countries=data["include_countries"],
                exclude_countries=data["exclude_countries"],
                active_only=data["active_only"],
                active_since=data["active_since"],
                attribute_filters=data["attribute_filters"] or {},
            )
            regions = list(data["include_regions"])
        total, by_country = audience_counts(memo, regions)
        return JsonResponse({"total": total, "by_country": [[c, n, k] for c, n, k in by_country]})

    def explain_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        memo = self._memo(request, object_id)
        developer = Developer.objects.filter(external_id=request.GET.get("developer", "")[:100]).first()
        if developer is None:
            return JsonResponse({"explanation": "No developer with that external id."})
        return JsonResponse({"explanation": audience_explain(memo, developer)})

    def has_export_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        # The evidence holds addresses, IPs and user agents: not for the Viewer role.
        return request.user.has_perm("memos.change_memo") or request.user.has_perm("memos.approve_memo")

    def evidence_view(self, request: HttpRequest, object_id: str, fmt: str) -> StreamingHttpResponse:
        return _evidence_response(self._memo(request, object_id, "export"), fmt)

    def verify_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id)
        result = evidence_verify(memo)
        summary = result.summary()
        (messages.success if result.ok else messages.error)(request, summary[:1].upper() + summary[1:] + ".")
        return HttpResponseRedirect(_memo_url(memo))


def _evidence_response(memo: Memo, fmt: str) -> StreamingHttpResponse:
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
    paginator = CappedCountPaginator

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "memo", "developer", "kind", "sequence", "status", "country", "sent_at"]
    list_filter = ["status", "kind", "memo"]
    list_select_related = ["memo", "developer"]
    search_fields = ["=developer__external_id", "=provider_message_id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The list shows none of the long text; the detail page loads it.
        return (
            super()
            .get_queryset(request)
            .defer(
                "last_error",
                "reason",
                "memo__html_body",
                "memo__text_body",
                "memo__subject",
                "developer__attributes",
            )
        )


@admin.register(DeliveryEvent)
class DeliveryEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "provider", "event_type", "delivery_id", "occurred_at", "received_at"]
    list_filter = ["provider", "event_type"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).defer("payload", "description")


@admin.register(Acknowledgement)
class AcknowledgementAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "memo",
        "developer",
        "response",
        "channel",
        "created_at",
        "suspected_automation",
        "ip_address",
    ]
    list_filter = ["response", "channel", "suspected_automation", "memo"]
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
    change_list_template = "admin/role_hint_change_list.html"
    list_filter = [DisputeStateFilter, "memo"]
    list_select_related = ["memo", "developer", "resolution"]
    actions = ["correct_region", "confirm_region"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).filter(response=Acknowledgement.Response.DISPUTES_REGION)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deciding changes the developer's country, never the answer itself: its own
        # permission, which the Composer role holds (migration 0010).
        return request.user.has_perm("memos.change_dispute")

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        hint = (
            None
            if self.has_change_permission(request)
            else ("You may read the disputes; deciding them (correct or confirm the region) takes the Composer role.")
        )
        return super().changelist_view(request, {**(extra_context or {}), "role_hint": hint})

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


class AuditMemoFilter(admin.SimpleListFilter):
    """Events about one memo: on the memo itself, or naming it (a dispute's country change)."""

    title = "memo"
    parameter_name = "memo"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(pk), title) for pk, title in Memo.objects.order_by("-created_at").values_list("pk", "title")[:100]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        memo = Memo.objects.filter(pk=value).only("slug").first() if value.isdigit() else None
        if memo is None:
            return queryset.none()
        return queryset.filter(Q(object_type="memos.memo", object_id=str(memo.pk)) | Q(detail__memo=memo.slug))


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "action", "about", "detail"]
    list_filter = [AuditMemoFilter, "action"]
    list_select_related = ["actor"]
    search_fields = ["action", "actor__username", "object_id"]

    @admin.display(description="about")
    def about(self, event: AuditEvent) -> str:
        """The object by its name, linked to its page (not "memos.memo 2")."""
        model = apps.get_model(event.object_type) if event.object_type.count(".") == 1 else None
        obj = model._default_manager.filter(pk=event.object_id).first() if model is not None else None
        if obj is None:
            return f"{event.object_type} {event.object_id}"
        assert model is not None  # obj was found through it
        label = f"{model._meta.verbose_name} “{obj}”"
        try:
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[obj.pk])
        except NoReverseMatch:  # a model without an admin page
            return label
        return format_html('<a href="{}">{}</a>', url, label)


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")
    events = forms.MultipleChoiceField(choices=WebhookEndpoint.Event.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "events", "secret", "is_active"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        try:
            target_address(url)  # only public targets (memo_service/netguard.py)
        except TargetRefused as exc:
            raise forms.ValidationError(f"Refused: {exc}.") from None
        return url


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


@admin.register(SendLease)
class SendLeaseAdmin(ReadOnlyAdmin):
    """Send tasks at work, and those a dead worker left (memos/leases.py, reconcile.py)."""

    list_display = ["id", "memo", "holder", "deliveries", "created_at", "last_renewed_at", "expires_at", "note"]
    exclude = ["delivery_ids"]

    @admin.display(description="deliveries")
    def deliveries(self, lease: SendLease) -> int:
        return len(lease.delivery_ids)
