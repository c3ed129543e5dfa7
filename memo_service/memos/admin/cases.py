"""Cases under Memos → Cases (/admin/memos/case/): the list (with "assigned to me"), and
each case's page, which shows the developer's answer and the case's history and holds
its buttons: assign, note, reply, status, resolve, and a dispute's decision (through a
confirmation page). Every button posts to its own URL, which calls one function of
memos/cases/cases.py; a reader without the case permission gets the page without them
and a refusal for any post."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.models import Permission, User
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.timesince import timesince

from memo_service.lib.admin_paging import CappedCountPaginator
from memo_service.memos.audience import audience_reasons
from memo_service.memos.audit import signed_in
from memo_service.memos.cases.cases import (
    CASE_OUTCOMES,
    CASE_PERMISSION,
    CaseInvalid,
    case_assign,
    case_decide_dispute,
    case_decision_check,
    case_note,
    case_reply,
    case_resolve,
    case_set_status,
    decision_outcomes,
    outcome_label,
)
from memo_service.memos.cases.opening import CASES_OPEN
from memo_service.memos.models import Answer, Case, Delivery, DisputeResolution

ROLE_NEEDED = "Handling cases (assigning, notes, replies, decisions) takes the Composer role."


class AssignedFilter(admin.SimpleListFilter):
    title = "assigned to"
    parameter_name = "assigned"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("me", "me"), ("nobody", "nobody")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "me":
            return queryset.filter(assignee_id=request.user.pk)
        if self.value() == "nobody":
            return queryset.filter(assignee__isnull=True)
        return queryset


def case_handlers() -> QuerySet[User]:
    """Who a case can be assigned to: active staff holding the case permission."""
    app_label, codename = CASE_PERMISSION.split(".")
    permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
    return (
        User.objects.filter(is_active=True, is_staff=True)
        .filter(Q(is_superuser=True) | Q(groups__permissions=permission) | Q(user_permissions=permission))
        .distinct()
        .order_by("username")
    )


def countries_of(case: Case) -> str:
    """A dispute's countries: the recorded and the claimed one, and after a correction
    the earlier and the new one (both stay visible)."""
    answer = case.answer
    if answer.response != Answer.Response.DISPUTES_REGION:
        return ""
    resolution = getattr(answer, "resolution", None)
    if resolution is not None and resolution.previous_country:
        return f"{resolution.previous_country.code} → {resolution.new_country.code}"
    return f"{case.developer.country.code}, claims {answer.country_claimed.code}"


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ["case", "kind", "memo", "developer_ref", "status", "assignee", "age", "countries", "outcome_col"]
    list_display_links = ["case"]
    list_filter = [AssignedFilter, "status", "kind", "memo"]
    list_select_related = ["memo", "developer", "assignee", "answer", "answer__resolution"]
    search_fields = ["=developer__external_id"]
    show_full_result_count = False
    paginator = CappedCountPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # an answer opens a case

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a case is a record of what was said and decided

    @admin.display(description="case", ordering="id")
    def case(self, case: Case) -> str:
        return str(case)

    @admin.display(description="developer", ordering="developer__external_id")
    def developer_ref(self, case: Case) -> str:
        return case.developer.external_id

    @admin.display(description="age", ordering="opened_at")
    def age(self, case: Case) -> str:
        return timesince(case.opened_at, case.resolved_at or timezone.now())

    @admin.display(description="countries")
    def countries(self, case: Case) -> str:
        return countries_of(case)

    @admin.display(description="outcome")
    def outcome_col(self, case: Case) -> str:
        carried = f" (carried from #{case.carried_from_id})" if case.carried_from_id else ""
        return outcome_label(case) + carried

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        hint = None if self.has_change_permission(request) else f"You may read the cases. {ROLE_NEEDED}"
        return super().changelist_view(request, {**(extra_context or {}), "role_hint": hint, "title": "Cases"})

    change_list_template = "admin/role_hint_change_list.html"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The case's page (GET only: its buttons post to their own URLs)."""
        case = self._case(request, object_id)
        if request.method != "GET":
            return HttpResponseRedirect(self._url(case))
        return self._page(request, case, "admin/memos/case/case.html", self._title(case), **self._facts(case, request))

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        routes = {
            "assign": self.assign_view,
            "note": self.note_view,
            "reply": self.reply_view,
            "status": self.status_view,
            "resolve": self.resolve_view,
            "decide": self.decide_view,
        }
        return [
            *(path(f"<path:object_id>/{name}/", view(fn), name=f"memos_case_{name}") for name, fn in routes.items()),
            *super().get_urls(),
        ]

    def assign_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        case = self._writable(request, object_id)
        chosen = request.POST.get("assignee", "")
        assignee: User | None = None
        if chosen == "me":
            assignee = signed_in(request)
        elif chosen:  # "" is nobody
            assignee = User.objects.filter(pk=int(chosen)).first() if chosen.isdigit() else None
            if assignee is None:
                messages.error(request, "Choose someone from the list.")
                return HttpResponseRedirect(self._url(case))
        return self._do(
            request,
            case,
            lambda: case_assign(case=case, by=signed_in(request), assignee=assignee),
            f"Assigned to {assignee.get_username()}." if assignee is not None else "Assigned to nobody.",
        )

    def note_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        case = self._writable(request, object_id)
        text = request.POST.get("text", "")
        return self._do(request, case, lambda: case_note(case=case, by=signed_in(request), text=text), "Note added.")

    def reply_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        case = self._writable(request, object_id)
        text = request.POST.get("text", "")
        return self._do(
            request,
            case,
            lambda: case_reply(case=case, by=signed_in(request), text=text),
            "Reply emailed to the developer; the case waits for them.",
        )

    def status_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        case = self._writable(request, object_id)
        status = request.POST.get("status", "")
        return self._do(
            request,
            case,
            lambda: case_set_status(case=case, by=signed_in(request), status=status),
            "Status changed.",
        )

    def resolve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        case = self._writable(request, object_id)
        outcome, rationale = request.POST.get("outcome", ""), request.POST.get("rationale", "")
        return self._do(
            request,
            case,
            lambda: case_resolve(case=case, by=signed_in(request), outcome=outcome, rationale=rationale),
            f"Resolved: {CASE_OUTCOMES.get(outcome, '')}.",
        )

    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A dispute's decision: the form's post shows what it will do and asks to
        confirm; the confirmation's post decides."""
        case = self._writable(request, object_id)
        outcome, rationale = request.POST.get("outcome", ""), request.POST.get("rationale", "")
        if request.POST.get("confirmed") != "1":
            try:
                rationale = case_decision_check(case=case, outcome=outcome, rationale=rationale)
            except CaseInvalid as exc:
                messages.error(request, str(exc))
                return HttpResponseRedirect(self._url(case))
            return self._page(
                request,
                case,
                "admin/memos/case/decide_confirm.html",
                f"Confirm the decision on {case}",
                outcome=outcome,
                outcome_label=decision_outcomes(case)[outcome],
                rationale=rationale,
                consequence=self._consequence(case, outcome),
            )
        label = decision_outcomes(case).get(outcome, "")
        return self._do(
            request,
            case,
            lambda: case_decide_dispute(case=case, by=signed_in(request), outcome=outcome, rationale=rationale),
            f"Decided: {label}. The developer is emailed the outcome.",
        )

    def _consequence(self, case: Case, outcome: str) -> str:
        developer, answer = case.developer, case.answer
        if outcome == DisputeResolution.Outcome.CORRECTED:
            claimed = answer.country_claimed
            inside = claimed.code in audience_reasons(case.memo)
            return (
                f"{developer.external_id}'s country changes from {developer.country.name} ({developer.country.code}) "
                f"to {claimed.name} ({claimed.code}); "
                + (
                    "that country is in the memo's audience: the memo still applies to them."
                    if inside
                    else "that country is outside the memo's audience: the memo no longer applies to them."
                )
            )
        if outcome == DisputeResolution.Outcome.EXEMPTED:
            return f"The memo no longer applies to {developer.external_id}; their country stays as recorded."
        return f"{developer.external_id}'s country and traffic stay as recorded; the memo still applies to them."

    # What the pages share.

    def _case(self, request: HttpRequest, object_id: str) -> Case:
        if not str(object_id).isdigit():
            raise Http404("No such case.")
        case = get_object_or_404(
            Case.objects.select_related(
                "memo", "developer", "answer", "answer__resolution", "assignee", "resolved_by", "carried_from"
            ),
            pk=object_id,
        )
        if not self.has_view_permission(request, case):
            raise PermissionDenied("Reading cases takes the Viewer, Composer or Approver role.")
        return case

    def _writable(self, request: HttpRequest, object_id: str) -> Case:
        """The case a button posts to, or a refusal: a GET changes nothing and a reader
        without the case permission may not post."""
        case = self._case(request, object_id)
        if not self.has_change_permission(request, case):
            raise PermissionDenied(ROLE_NEEDED)
        if request.method != "POST":
            raise PermissionDenied("A case changes only through its page's buttons.")
        return case

    def _do(self, request: HttpRequest, case: Case, write: Any, done: str) -> HttpResponse:
        try:
            write()
        except CaseInvalid as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, done)
        return HttpResponseRedirect(self._url(case))

    def _url(self, case: Case) -> str:
        return reverse("admin:memos_case_change", args=[case.pk])

    def _title(self, case: Case) -> str:
        return f"{str(case)[:1].upper()}{str(case)[1:]}: {case.developer.external_id} on “{case.memo.title}”"

    def _facts(self, case: Case, request: HttpRequest) -> dict[str, Any]:
        answer = case.answer
        delivery = (
            Delivery.objects.filter(
                memo_id=answer.memo_id, developer_id=answer.developer_id, kind=Delivery.Kind.INITIAL
            )
            .only("country", "reason")
            .first()
        )
        can_change = self.has_change_permission(request, case) and case.status != Case.Status.RESOLVED
        return {
            "answer": answer,
            "resolution": getattr(answer, "resolution", None),
            "delivery": delivery,
            "entries": case.entries.select_related("author", "notification"),
            "carried_to": list(case.carried_to.all()),
            "outcome_label": outcome_label(case),
            "age": timesince(case.opened_at, case.resolved_at or timezone.now()),
            "can_change": can_change,
            "can_note": self.has_change_permission(request, case),
            "handlers": case_handlers() if can_change else [],
            "outcomes": CASE_OUTCOMES if case.kind != Case.Kind.DISPUTE else {},
            "decisions": decision_outcomes(case) if case.kind == Case.Kind.DISPUTE else {},
            "statuses": [(s.value, s.label) for s in (Case.Status.OPEN, Case.Status.WAITING)],
            "role_hint": None
            if self.has_change_permission(request, case)
            else f"You may read this case. {ROLE_NEEDED}",
        }

    def _page(self, request: HttpRequest, case: Case, template: str, title: str, **context: Any) -> TemplateResponse:
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "case": case,
                "original": case,
                "case_url": self._url(case),
                "title": title,
                **context,
            },
        )


def _app_list_with_open_cases(get_app_list: Any) -> Any:
    """The admin's app list with Cases named by how many are open or waiting, on the
    admin's index pages only (the sidebar of every other page stays free of counts): one
    count on the status index, for those who may read cases."""

    def app_list(request: HttpRequest, app_label: str | None = None) -> list[Any]:
        apps = get_app_list(request, app_label)
        match = request.resolver_match
        if match is None or match.url_name not in ("index", "app_list"):
            return apps
        for app in apps:
            for model in app["models"]:
                if model["model"] is Case:
                    model["name"] = f"Cases ({Case.objects.filter(status__in=CASES_OPEN).count()} open)"
        return apps

    return app_list


admin.site.get_app_list = _app_list_with_open_cases(admin.site.get_app_list)  # type: ignore[method-assign]
