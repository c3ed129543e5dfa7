"""Who a memo goes to: included countries and regions, minus excluded countries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from django.db.models import Count, Exists, OuterRef, QuerySet
from django.db.models.fields.json import KeyTransform
from django_countries import countries

from memo_service.developers.models import Developer, Region
from memo_service.memos.models import AudienceSnapshot, Memo


def audience_reasons(memo: Memo, regions: Iterable[Region] | None = None) -> dict[str, str]:
    """{country code: why developers there are in the cohort} for the memo's rules
    (`regions` stands in for the memo's included regions, for rules not saved yet)."""
    reasons: dict[str, str] = {}
    for region in memo.include_regions.all() if regions is None else regions:
        for country in region.countries:
            reasons.setdefault(country.code, f"{country.code} is in region {region.name}")
    for country in memo.include_countries:
        reasons[country.code] = f"{country.code} is an included country"
    for country in memo.exclude_countries:
        reasons.pop(country.code, None)
    return reasons


def memo_audience(memo: Memo, regions: Iterable[Region] | None = None) -> QuerySet[Developer]:
    developers = Developer.objects.filter(country__in=list(audience_reasons(memo, regions)))
    if memo.active_only:
        developers = developers.filter(is_active=True)
    if memo.active_since:
        developers = developers.filter(last_active_at__date__gte=memo.active_since)
    for n, (key, value) in enumerate((memo.attribute_filters or {}).items()):
        # A key transform, not "attributes__<key>": a key named like a lookup
        # ("isnull", "contains") must stay a key.
        developers = developers.alias(**{f"_attr{n}": KeyTransform(key, "attributes")}).filter(**{f"_attr{n}": value})
    return developers.filter(erased_at__isnull=True)


def audience_explain(memo: Memo, developer: Developer) -> str:
    """One line: why this developer is, or is not, in the memo's audience."""
    reasons = audience_reasons(memo)
    code = developer.country.code
    if code not in reasons:
        excluded = code in {c.code for c in memo.exclude_countries}
        return f"{developer.external_id} is not included: {code} is " + (
            "an excluded country" if excluded else "in no included country or region"
        )
    if memo.active_only and not developer.is_active:
        return f"{developer.external_id} is not included: the account is inactive"
    if memo.active_since and (developer.last_active_at is None or developer.last_active_at.date() < memo.active_since):
        return f"{developer.external_id} is not included: not active since {memo.active_since}"
    for key, value in (memo.attribute_filters or {}).items():
        if (developer.attributes or {}).get(key) != value:
            return f"{developer.external_id} is not included: attribute {key} is not {value!r}"
    extra = [
        *(["active"] if memo.active_only else []),
        *([f"active since {memo.active_since}"] if memo.active_since else []),
        *(f"{k} = {v!r}" for k, v in (memo.attribute_filters or {}).items()),
    ]
    return f"{developer.external_id} is included: {reasons[code]}" + (f"; {', '.join(extra)}" if extra else "")


def audience_counts(memo: Memo, regions: Iterable[Region] | None = None) -> tuple[int, list[tuple[str, str, int]]]:
    """(total, [(code, country name, developers), ...] largest first)."""
    rows = memo_audience(memo, regions).values("country").annotate(n=Count("id")).order_by("-n", "country")
    # values() gives the stored code, not the Country that the model's attribute is typed as.
    codes_and_counts = [(cast(str, r["country"]), r["n"]) for r in rows]
    by_country = [(code, countries.name(code), n) for code, n in codes_and_counts]
    return sum(n for _, _, n in by_country), by_country


def audience_changes(memo: Memo) -> dict[str, Any]:
    """Who joined or left the audience since approval, per country."""
    snapshot = AudienceSnapshot.objects.filter(memo=memo)
    added = (
        memo_audience(memo)
        .exclude(Exists(snapshot.filter(developer_id=OuterRef("pk"))))
        .values("country")
        .annotate(n=Count("id"))
        .order_by("country")
    )
    removed = (
        snapshot.exclude(Exists(memo_audience(memo).filter(pk=OuterRef("developer_id"))))
        .values("country")
        .annotate(n=Count("id"))
        .order_by("country")
    )
    changes = {
        "added": {r["country"]: r["n"] for r in added},
        "removed": {r["country"]: r["n"] for r in removed},
    }
    changes["any"] = bool(changes["added"] or changes["removed"])
    return changes
