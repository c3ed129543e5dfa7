"""Answers and disputes, read-only: a help request, a dispute or an objection is handled
on its case (admin/cases.py), which each row links to."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from memo_service.memos.admin.readonly import ReadOnlyAdmin
from memo_service.memos.answer.answers import DISPUTES
from memo_service.memos.models import Answer, Case, Delivery, Dispute


def case_of(answer: Answer) -> Case | None:
    """The case the answer opened on its own memo (a carried one lives on the correction)."""
    return Case.objects.filter(answer=answer, memo_id=answer.memo_id).first()


def with_case(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """Each answer with its case's id and status (case_pk, case_status): one query a page."""
    cases = Case.objects.filter(answer_id=OuterRef("pk"), memo_id=OuterRef("memo_id"))
    return queryset.annotate(case_pk=Subquery(cases.values("pk")[:1]), case_status=Subquery(cases.values("status")[:1]))


def case_link(answer: Any) -> str:
    if getattr(answer, "case_pk", None) is None:
        return ""
    url = reverse("admin:memos_case_change", args=[answer.case_pk])
    return format_html('<a href="{}">case #{} ({})</a>', url, answer.case_pk, Case.Status(answer.case_status).label)


def answer_title(answer: Answer) -> str:
    return f"{answer.get_response_display().capitalize()}: {answer.developer.external_id} on “{answer.memo.title}”"


@admin.register(Answer)
class AnswerAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "memo",
        "developer",
        "response",
        "channel",
        "created_at",
        "suspected_automation",
        "ip_address",
        "case",
    ]
    list_filter = ["response", "channel", "suspected_automation", "memo"]
    list_select_related = ["memo", "developer"]
    search_fields = ["=developer__external_id"]
    readonly_fields = ["case"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return with_case(super().get_queryset(request))

    @admin.display(description="case")
    def case(self, answer: Answer) -> str:
        return case_link(answer)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        answer = (
            Answer.objects.select_related("memo", "developer").filter(pk=object_id).first()
            if str(object_id).isdigit()
            else None
        )
        title = {"title": answer_title(answer), "subtitle": None} if answer is not None else {}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **title})


class DisputeStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "open"), ("resolved", "resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(resolution__isnull=self.value() == "open")
        return queryset


class DisputeKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(kind.value, kind.label) for kind in DISPUTES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(response=self.value()) if self.value() else queryset


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdmin):
    """The "my region is wrong" and "this traffic is not mine" answers, each beside the
    evidence that put the developer in; each is decided on its case (with a rationale
    and a confirmation), which a row and the old dispute page lead to."""

    list_display = [
        "developer",
        "memo",
        "response",
        "recorded_country",
        "country_claimed",
        "why_included",
        "comment",
        "created_at",
        "outcome",
        "case",
    ]
    change_list_template = "admin/role_hint_change_list.html"
    list_filter = [DisputeStateFilter, DisputeKindFilter, "memo"]
    list_select_related = ["memo", "developer", "resolution"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        reasons = Delivery.objects.filter(
            memo_id=OuterRef("memo_id"), developer_id=OuterRef("developer_id"), kind=Delivery.Kind.INITIAL
        ).values("reason")[:1]
        disputes = super().get_queryset(request).filter(response__in=DISPUTES)
        return with_case(disputes).annotate(included_for=Subquery(reasons))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        hint = "Each dispute is decided on its case: follow the link in its row (Memos → Cases)."
        return super().changelist_view(request, {**(extra_context or {}), "role_hint": hint})

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        answer = Answer.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        case = case_of(answer) if answer is not None else None
        if case is not None and self.has_view_permission(request, answer):
            return HttpResponseRedirect(reverse("admin:memos_case_change", args=[case.pk]))
        return super().change_view(request, object_id, form_url, extra_context)

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return [f.name for f in Answer._meta.fields]

    @admin.display(description="recorded country")
    def recorded_country(self, answer: Answer) -> str:
        resolution = getattr(answer, "resolution", None)
        if resolution is not None and resolution.previous_country:
            return f"{resolution.previous_country.code} → {resolution.new_country.code}"
        return answer.developer.country.code

    @admin.display(description="why they were told")
    def why_included(self, answer: Any) -> str:
        return answer.included_for or ""

    @admin.display(description="outcome")
    def outcome(self, answer: Answer) -> str:
        resolution = getattr(answer, "resolution", None)
        if resolution is None:
            return "open"
        return resolution.get_outcome_display() + (" (exempt from the memo)" if resolution.exempt else "")

    @admin.display(description="case")
    def case(self, answer: Answer) -> str:
        return case_link(answer)
