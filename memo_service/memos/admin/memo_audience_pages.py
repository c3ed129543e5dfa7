"""What the memo's change page asks while the audience rules are edited: the audience
count for the rules as they stand, saved or not, how many an activity date rule leaves
out for having none, and why a developer is in or out."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.template.loader import render_to_string

from memo_service.developers.models import Developer, Region
from memo_service.memos.admin.memo_forms import AudienceRulesForm
from memo_service.memos.admin.memo_pages import MemoPages
from memo_service.memos.audience import audience_counts, audience_explain, memo_audience
from memo_service.memos.models import Memo


def _rules_memo(data: dict[str, Any], approved_rules: Any) -> Memo:
    """A memo, not saved, with the audience rules of the form."""
    return Memo(
        include_countries=data["include_countries"],
        exclude_countries=data["exclude_countries"],
        active_only=data["active_only"],
        active_since=data["active_since"],
        attribute_filters=data["attribute_filters"] or {},
        audience_basis=data["audience_basis"] or Memo.Basis.ACCOUNT,
        traffic_countries=data["traffic_countries"],
        traffic_days=data["traffic_days"] or 30,
        traffic_min_requests=data["traffic_min_requests"] or 1,
        approved_rules=approved_rules,  # an approved memo's traffic window stays where it was
    )


def no_activity_date(
    memo: Memo, regions: Iterable[Region] | None = None, traffic_regions: Iterable[Region] | None = None
) -> int:
    """How many developers the memo's other rules take in but `active_since` leaves out
    because they have no activity date at all (the rule wants a date on or after it)."""
    if not memo.active_since:
        return 0
    undated = copy.copy(memo)
    undated.active_since = None
    return memo_audience(undated, regions, traffic_regions).filter(last_active_at__isnull=True).count()


class MemoAudiencePages(MemoPages):
    @admin.display(description="audience now")
    def audience_summary(self, memo: Memo) -> str:
        # A new memo's is counted by the page's script from the rules as they are typed.
        total, by_country = audience_counts(memo) if memo.pk is not None else (0, [])
        return render_to_string(
            "admin/memos/memo/_audience_summary.html",
            {
                "memo": memo,
                "total": total,
                "by_country": by_country,
                "no_activity_date": no_activity_date(memo) if memo.pk is not None else 0,
            },
        )

    def audience_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The audience count for the rules as they stand in the form, saved or not."""
        return self._audience_json(request, self._memo(request, object_id))

    def audience_rules_view(self, request: HttpRequest) -> JsonResponse:
        """The same for a memo not saved yet: the rules are all there is."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return self._audience_json(request, Memo())

    def _rules(
        self, request: HttpRequest, memo: Memo
    ) -> tuple[Memo, list[Region] | None, list[Region] | None] | JsonResponse:
        """The memo as the rules in the query (`rules=1`) make it, with their regions; the
        saved memo without them; a 400 naming the bad fields if they do not read."""
        if "rules" not in request.GET:
            regions: list[Region] | None = None if memo.pk else []
            return memo, regions, regions
        form = AudienceRulesForm(request.GET)
        if not form.is_valid():
            return JsonResponse({"errors": form.errors}, status=400)
        return (
            _rules_memo(form.cleaned_data, memo.approved_rules),
            list(form.cleaned_data["include_regions"]),
            list(form.cleaned_data["traffic_regions"]),
        )

    def _audience_json(self, request: HttpRequest, memo: Memo) -> JsonResponse:
        rules = self._rules(request, memo)
        if isinstance(rules, JsonResponse):
            return rules
        memo, regions, traffic_regions = rules
        total, by_country = audience_counts(memo, regions, traffic_regions)
        return JsonResponse(
            {
                "total": total,
                "basis": memo.audience_basis,
                "by_country": [list(r) for r in by_country],
                "no_activity_date": no_activity_date(memo, regions, traffic_regions),
            }
        )

    def explain_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """Why a developer is in or out: under the rules in the query (`rules=1`, as the
        page's form has them now, saved or not), or the saved ones without."""
        rules = self._rules(request, self._memo(request, object_id))
        if isinstance(rules, JsonResponse):
            return JsonResponse({"explanation": "The audience rules are not valid yet: correct them first."})
        memo, regions, traffic_regions = rules
        developer = Developer.objects.filter(external_id=request.GET.get("developer", "").strip()[:100]).first()
        if developer is None:
            return JsonResponse({"explanation": "No developer with that external id."})
        return JsonResponse({"explanation": audience_explain(memo, developer, regions, traffic_regions)})
