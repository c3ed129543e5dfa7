"""Answers and disputes: read-only but for deciding a dispute."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse

from memo_service.memos.admin.readonly import ReadOnlyAdmin
from memo_service.memos.answer.answers import DISPUTES
from memo_service.memos.answer.disputes import DisputeInvalid, dispute_resolve
from memo_service.memos.audit import signed_in
from memo_service.memos.models import (
    Answer,
    Delivery,
    Dispute,
    DisputeResolution,
)


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


class DisputeKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(kind.value, kind.label) for kind in DISPUTES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(response=self.value()) if self.value() else queryset


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdmin):
    """The queue of "my region is wrong" and "this traffic is not mine" answers, each
    beside the evidence that put the developer in; resolve them with the actions."""

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
    ]
    change_list_template = "admin/role_hint_change_list.html"
    list_filter = [DisputeStateFilter, DisputeKindFilter, "memo"]
    list_select_related = ["memo", "developer", "resolution"]
    actions = ["correct_region", "confirm_region", "exempt_developer"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        reasons = Delivery.objects.filter(
            memo_id=OuterRef("memo_id"), developer_id=OuterRef("developer_id"), kind=Delivery.Kind.INITIAL
        ).values("reason")[:1]
        return super().get_queryset(request).filter(response__in=DISPUTES).annotate(included_for=Subquery(reasons))

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
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

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return [f.name for f in Answer._meta.fields]

    @admin.display(description="recorded country")
    def recorded_country(self, answer: Answer) -> str:
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

    def _resolve(self, request: HttpRequest, queryset: QuerySet[Any], outcome: str) -> None:
        done = 0
        for answer in queryset:
            try:
                dispute_resolve(answer=answer, outcome=outcome, by=signed_in(request))
                done += 1
            except DisputeInvalid as exc:
                messages.warning(request, str(exc))
        if done:
            messages.success(request, f"Resolved {done} dispute{'s' if done != 1 else ''}.")

    @admin.action(description="Correct the region to the claimed country", permissions=["change"])
    def correct_region(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._resolve(request, queryset, DisputeResolution.Outcome.CORRECTED)

    @admin.action(description="Confirm the recorded region or traffic", permissions=["change"])
    def confirm_region(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._resolve(request, queryset, DisputeResolution.Outcome.CONFIRMED)

    @admin.action(description="Exempt the developer from the memo", permissions=["change"])
    def exempt_developer(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._resolve(request, queryset, DisputeResolution.Outcome.EXEMPTED)
