"""What the memo's change page asks while the audience rules are edited: the audience
count for the rules as they stand, saved or not, and why a developer is in or out."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse

from memo_service.developers.models import Developer, Region
from memo_service.memos.admin.memo_forms import AudienceRulesForm
from memo_service.memos.admin.memo_pages import MemoPages
from memo_service.memos.audience import audience_counts, audience_explain
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


class MemoAudiencePages(MemoPages):
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
            memo = _rules_memo(form.cleaned_data, memo.approved_rules)
            regions = list(form.cleaned_data["include_regions"])
            traffic_regions = list(form.cleaned_data["traffic_regions"])
        total, by_country = audience_counts(memo, regions, traffic_regions)
        return JsonResponse({"total": total, "basis": memo.audience_basis, "by_country": [list(r) for r in by_country]})

    def explain_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        memo = self._memo(request, object_id)
        developer = Developer.objects.filter(external_id=request.GET.get("developer", "")[:100]).first()
        if developer is None:
            return JsonResponse({"explanation": "No developer with that external id."})
        return JsonResponse({"explanation": audience_explain(memo, developer)})
