"""The memo's admin: its change page and the pages of each step (approve, send, schedule,
pause, preview, dashboard, evidence)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from memo_service.developers.models import Developer, Region
from memo_service.memos.admin.memo_forms import (
    VARIABLES_HELP,
    AudienceRulesForm,
    MemoForm,
    ScheduleForm,
    TranslationInline,
    error_places,
)
from memo_service.memos.approval import (
    ApprovalRefused,
    memo_approve,
    memo_edited,
    memo_request_approval,
)
from memo_service.memos.audience import (
    audience_changes,
    audience_counts,
    audience_explain,
    audience_reasons,
    memo_audience,
)
from memo_service.memos.audit import audit_record
from memo_service.memos.compose import sandbox
from memo_service.memos.compose.context import developer_context
from memo_service.memos.compose.links import inert_ack_url
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.compose.sources import FALLBACK_LANGUAGE
from memo_service.memos.compose.trial_email import memo_send_test
from memo_service.memos.compose.versions import memo_versions
from memo_service.memos.evidence.export import evidence_csv, evidence_json
from memo_service.memos.evidence.verify import evidence_verify_published
from memo_service.memos.models import MEMO_OUT, MEMO_STARTABLE, Memo
from memo_service.memos.reminders import RemindRefused, memo_remind_now
from memo_service.memos.report.reports import (
    DASHBOARD_COLUMNS,
    UNANSWERED_PAGE,
    ack_chart_svg,
    dashboard_rows,
    memo_funnel,
    memo_outcome_unknown,
    memo_progress,
    unanswered_csv,
    unanswered_rows,
)
from memo_service.memos.send.control import ControlRefused, memo_cancel, memo_pause, memo_resume
from memo_service.memos.send.dispatch import AudienceChanged, DispatchRefused, memo_send_start
from memo_service.memos.send.reconcile import memo_unknown_resend
from memo_service.memos.send.schedule import memo_schedule, memo_unschedule
from memo_service.memos.snapshot import traffic_of

# What a refused button says (refusals.py shows it inside the admin): who may do it.
ROLE_NEEDED = {
    "view": "Reading memos takes the Viewer, Composer or Approver role.",
    "change": "Writing memos and asking for approval take the Composer role.",
    "send": "Sending, scheduling, pausing, resuming and cancelling memos take the Composer role.",
    "approve": "Approving memos takes the Approver role, and someone other than the memo's author or last editor.",
    "export": "The evidence holds addresses, IP addresses and user agents: exporting it takes the Composer or "
    "Approver role, not Viewer.",
}


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


@admin.register(Memo)
class MemoAdmin(admin.ModelAdmin):
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
        rows = format_html_join("", "<tr><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td></tr>", by_country)
        explain = reverse("admin:memos_memo_explain", args=[memo.pk])
        return format_html(
            '<div id="audience-summary" data-url="{}" data-saved="1"><strong>{} developers</strong>'
            "<table><tr><th>account country</th><th>developers</th><th>in by account</th><th>in by traffic</th>"
            "</tr>{}</table></div>"
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
        languages = [FALLBACK_LANGUAGE, *(t.language for t in memo.translations.all())]
        query = request.POST if request.method == "POST" else request.GET
        params: Mapping[str, Any] = query  # the request's, or them with a developer picked below
        language = params.get("language") if params.get("language") in languages else None
        q = params.get("q", "").strip()[:100]
        audience = memo_audience(memo)
        in_by = params.get("in_by", "") if memo.audience_basis != Memo.Basis.ACCOUNT else ""
        if in_by == "traffic_only":  # in by traffic, and not by the account's country
            audience = audience.exclude(country__in=list(audience_reasons(memo)))
        elif in_by == "account":
            audience = audience.filter(country__in=list(audience_reasons(memo)))
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
            context = developer_context(developer, traffic_of(memo, [developer.pk]).get(developer.pk, ()))
            if language:
                context["language"] = language
            try:
                # A dead link of the real one's shape: a preview must not let anyone answer
                # for the developer, nor let the template see it is a preview.
                used, email = MemoRenderer(memo).render(context, inert_ack_url(memo.pk, developer.pk))
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
                memo_send_test(
                    memo=memo,
                    email=email,
                    to=request.user.email,
                    by=request.user,
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
            in_by=in_by,
            why=audience_explain(memo, developer) if developer is not None else "",
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
            and memo.status in MEMO_OUT
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
        traffic_regions = regions
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
                audience_basis=data["audience_basis"] or Memo.Basis.ACCOUNT,
                traffic_countries=data["traffic_countries"],
                traffic_days=data["traffic_days"] or 30,
                traffic_min_requests=data["traffic_min_requests"] or 1,
                approved_rules=memo.approved_rules,  # an approved memo's traffic window stays where it was
            )
            regions = list(data["include_regions"])
            traffic_regions = list(data["traffic_regions"])
        total, by_country = audience_counts(memo, regions, traffic_regions)
        return JsonResponse({"total": total, "basis": memo.audience_basis, "by_country": [list(r) for r in by_country]})

    def explain_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        memo = self._memo(request, object_id)
        developer = Developer.objects.filter(external_id=request.GET.get("developer", "")[:100]).first()
        if developer is None:
            return JsonResponse({"explanation": "No developer with that external id."})
        return JsonResponse({"explanation": audience_explain(memo, developer)})

    def has_export_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        # The evidence holds addresses, IPs and user agents: not for the Viewer role.
        return request.user.has_perm("memos.change_memo") or request.user.has_perm("memos.approve_memo")

    def evidence_view(self, request: HttpRequest, object_id: str, fmt: str) -> HttpResponse | StreamingHttpResponse:
        memo = self._memo(request, object_id, "export")
        if fmt == "json" and not (result := evidence_verify_published(memo)).ok:
            # The evidence file is what an auditor trusts: never one that does not verify.
            messages.error(request, f"Not exported: {result.summary()}.")
            return HttpResponseRedirect(_memo_url(memo))
        return _evidence_response(memo, fmt)

    def verify_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id)
        result = evidence_verify_published(memo)
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
