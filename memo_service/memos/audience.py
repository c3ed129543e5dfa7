"""Who a memo goes to: included countries and regions, minus excluded countries."""

from __future__ import annotations

from django.db.models import Count, QuerySet
from django_countries import countries

from memo_service.developers.models import Developer
from memo_service.memos.models import Memo


def audience_reasons(memo: Memo) -> dict[str, str]:
    """{country code: why developers there are in the cohort} for the memo's rules."""
    reasons: dict[str, str] = {}
    for region in memo.include_regions.all():
        for country in region.countries:
            reasons.setdefault(country.code, f"{country.code} is in region {region.name}")
    for country in memo.include_countries:
        reasons[country.code] = f"{country.code} is an included country"
    for country in memo.exclude_countries:
        reasons.pop(country.code, None)
    return reasons


def memo_audience(memo: Memo) -> QuerySet[Developer]:
    developers = Developer.objects.filter(country__in=list(audience_reasons(memo)))
    if memo.active_only:
        developers = developers.filter(is_active=True)
    return developers


def audience_counts(memo: Memo) -> tuple[int, list[tuple[str, str, int]]]:
    """(total, [(code, country name, developers), ...] largest first)."""
    rows = (
        memo_audience(memo).values("country").annotate(n=Count("id")).order_by("-n", "country")
    )
    by_country = [(r["country"], countries.name(r["country"]), r["n"]) for r in rows]
    return sum(n for _, _, n in by_country), by_country
