"""Who a memo goes to, and why each developer is in.

By the account's country (included countries and regions, minus excluded countries), by
where the account's API traffic came from (traffic countries and regions, minus the same
exclusions: at least `traffic_min_requests` requests from them in the `traffic_days` up
to approval), or either; activity and attribute filters apply to all three, and a
correction leaves out whoever a dispute exempted from a memo it corrects. The traffic
window is fixed when the memo is approved, so new traffic never moves an approved
audience.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from django.db.models import Count, Exists, IntegerField, Max, Min, OuterRef, Q, QuerySet, Sum, Value
from django.db.models.fields.json import KeyTransform
from django.utils import timezone
from django_countries import countries

from memo_service.developers.models import Developer, Region, TrafficObservation
from memo_service.lib.db import in_ids
from memo_service.memos.models import AudienceSnapshot, DisputeResolution, Memo

Basis = Memo.Basis
# Why a developer is in: at most what the snapshot (and so each delivery) keeps of it.
REASON_CHARS = AudienceSnapshot._meta.get_field("reason").max_length or 300


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


def traffic_codes(memo: Memo, regions: Iterable[Region] | None = None) -> list[str]:
    """The countries whose traffic puts a developer in (`regions` stands in for the
    memo's traffic regions, for rules not saved yet)."""
    codes = {c.code for c in memo.traffic_countries}
    for region in (memo.traffic_regions.all() if memo.pk else []) if regions is None else regions:
        codes |= {c.code for c in region.countries}
    return sorted(codes - {c.code for c in memo.exclude_countries})


def traffic_window(memo: Memo) -> tuple[dt.date, dt.date]:
    """(first day, last day) of the traffic that counts: the `traffic_days` up to the
    day of approval, or up to today for a memo not approved yet."""
    until = memo.approved_rules.get("traffic_until") if memo.approved_rules else None
    last = dt.date.fromisoformat(until) if until else timezone.now().date()
    return last - dt.timedelta(days=max(memo.traffic_days, 1) - 1), last


def _traffic(memo: Memo, regions: Iterable[Region] | None = None) -> QuerySet[TrafficObservation]:
    return TrafficObservation.objects.filter(
        country__in=traffic_codes(memo, regions), day__range=traffic_window(memo)
    ).order_by()


def _in_by_traffic(memo: Memo, regions: Iterable[Region] | None = None, ids: tuple[int, int] | None = None) -> Q:
    traffic = _traffic(memo, regions)
    if ids is not None:  # a page's developers only: their rows, not the whole window's
        traffic = traffic.filter(developer_id__gte=ids[0], developer_id__lte=ids[1])
    heavy = (
        traffic.values("developer_id")
        .annotate(total=Sum("requests"))
        .filter(total__gte=memo.traffic_min_requests)
        .values("developer_id")
    )
    return Q(id__in=heavy)


def memo_audience(
    memo: Memo,
    regions: Iterable[Region] | None = None,
    traffic_regions: Iterable[Region] | None = None,
    ids: tuple[int, int] | None = None,
    candidates: bool = False,
) -> QuerySet[Developer]:
    """The developers the memo's rules choose now (`ids`: only those whose id is in that
    range, which bounds the traffic read too). `candidates`: with an audience by traffic
    (or either), everyone the other rules let in, the basis left for the caller to decide
    (the snapshot's statement does, as it sums their traffic)."""
    by_account = Q(country__in=list(audience_reasons(memo, regions)))
    if memo.audience_basis == Basis.ACCOUNT:
        who = by_account
    elif candidates:
        who = Q()
    elif memo.audience_basis == Basis.TRAFFIC:
        who = _in_by_traffic(memo, traffic_regions, ids)
    else:
        who = by_account | _in_by_traffic(memo, traffic_regions, ids)
    developers = Developer.objects.filter(who)
    if ids is not None:
        developers = developers.filter(id__range=ids)
    if memo.active_only:
        developers = developers.filter(is_active=True)
    if memo.active_since:
        developers = developers.filter(last_active_at__date__gte=memo.active_since)
    for n, (key, value) in enumerate((memo.attribute_filters or {}).items()):
        # A key transform, not "attributes__<key>": a key named like a lookup
        # ("isnull", "contains") must stay a key.
        developers = developers.alias(**{f"_attr{n}": KeyTransform(key, "attributes")}).filter(**{f"_attr{n}": value})
    if earlier := superseded_ids(memo):
        developers = developers.exclude(Exists(_exempted(earlier, OuterRef("pk"))))
    return developers.filter(erased_at__isnull=True)


def superseded_ids(memo: Memo) -> list[int]:
    """The memos a correction corrects: the one it supersedes, and that one's, and so on."""
    ids: list[int] = []
    earlier = memo.supersedes_id
    while earlier is not None and earlier not in ids:
        ids.append(earlier)
        earlier = Memo.objects.filter(pk=earlier).values_list("supersedes_id", flat=True).first()
    return ids


def _exempted(memo_ids: list[int], developer: OuterRef | int) -> QuerySet[DisputeResolution]:
    """A dispute of this developer's on one of these memos that exempted them."""
    return DisputeResolution.objects.filter(answer__memo_id__in=memo_ids, answer__developer=developer, exempt=True)


def audience_pages(memo: Memo, size: int, after: int = 0, candidates: bool = False) -> Iterator[QuerySet[Developer]]:
    """The audience a page at a time, in id order: each page the audience among the next
    `size` developers of the table (so at most `size`), read with its id range bounding
    the traffic too (`candidates`: memo_audience's). Paging the audience itself
    (`id > last LIMIT size`) would make the database sum the whole window's traffic once
    per page."""
    accounts = Developer.objects.order_by("id").values_list("id", flat=True)
    last = after
    while True:
        ends = list(accounts.filter(id__gt=last)[size - 1 : size]) or list(accounts.filter(id__gt=last).reverse()[:1])
        if not ends:
            return
        yield memo_audience(memo, ids=(last + 1, ends[0]), candidates=candidates).order_by("id")
        last = ends[0]


@dataclass(frozen=True)
class TrafficFact:
    """What the traffic of one developer from one country within the window was."""

    country: str
    days: int
    first: dt.date
    last: dt.date
    requests: int
    geo_database: str

    def __str__(self) -> str:
        span = f"on {self.first}" if self.days == 1 else f"on {self.days} days between {self.first} and {self.last}"
        resolved = f" ({self.geo_database})" if self.geo_database else ""
        return f"traffic from {self.country} {span}, {self.requests:,} requests{resolved}"

    def as_json(self) -> list[Any]:
        return [
            self.country,
            self.days,
            self.first.isoformat(),
            self.last.isoformat(),
            self.requests,
            self.geo_database,
        ]

    @classmethod
    def from_json(cls, value: list[Any]) -> TrafficFact:
        country, days, first, last, requests, geo = value
        return cls(country, days, dt.date.fromisoformat(first), dt.date.fromisoformat(last), requests, geo)


def traffic_facts(
    memo: Memo, developer_ids: list[int], regions: Iterable[Region] | None = None
) -> dict[int, list[TrafficFact]]:
    """{developer id: their traffic from the memo's traffic countries within its window,
    a fact per country, most requests first}: one query (`regions`: traffic_codes')."""
    if memo.audience_basis == Basis.ACCOUNT or not developer_ids:
        return {}
    rows = (
        _traffic(memo, regions)
        .filter(developer_id__in=in_ids(developer_ids))
        .values("developer_id", "country")
        .annotate(
            days=Count("day", distinct=True),
            first=Min("day"),
            last=Max("day"),
            requests=Sum("requests"),
            geo=Max("geo_database"),
        )
    )
    facts: dict[int, list[TrafficFact]] = {}
    for r in rows:
        facts.setdefault(r["developer_id"], []).append(
            TrafficFact(r["country"], r["days"], r["first"], r["last"], r["requests"], r["geo"] or "")
        )
    for found in facts.values():
        found.sort(key=lambda f: (-f.requests, f.country))
    return facts


def traffic_enough(memo: Memo, facts: list[TrafficFact]) -> bool:
    """Does this traffic put its developer in the memo's audience by itself?"""
    return bool(facts) and sum(f.requests for f in facts) >= memo.traffic_min_requests


def inclusion_reason(memo: Memo, country: str, facts: list[TrafficFact], account_reasons: dict[str, str]) -> str:
    """Why a developer of the audience is in it: the account's country, the traffic, or
    both, as the memo's basis counts them (at most REASON_CHARS)."""
    parts = []
    if memo.audience_basis != Basis.TRAFFIC and country in account_reasons:
        parts.append(account_reasons[country])
    if memo.audience_basis != Basis.ACCOUNT and traffic_enough(memo, facts):
        parts.extend(str(f) for f in facts)
    reason = "; ".join(parts)
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 1] + "…"


def audience_explain(
    memo: Memo,
    developer: Developer,
    regions: Iterable[Region] | None = None,
    traffic_regions: Iterable[Region] | None = None,
) -> str:
    """One line: why this developer is, or is not, in the memo's audience (`regions` and
    `traffic_regions` stand in for the memo's, for rules not saved yet)."""
    who = developer.external_id
    reasons = audience_reasons(memo, regions)
    code = developer.country.code
    facts = traffic_facts(memo, [developer.pk], traffic_regions).get(developer.pk, [])
    by_account = memo.audience_basis != Basis.TRAFFIC and code in reasons
    by_traffic = memo.audience_basis != Basis.ACCOUNT and traffic_enough(memo, facts)
    if not (by_account or by_traffic):
        return f"{who} is not included: " + "; ".join(_not_in(memo, developer, facts, traffic_regions))
    if filtered_out := _filtered_out(memo, developer):
        return f"{who} is not included: {filtered_out}"
    extra = _filters(memo)
    reason = inclusion_reason(memo, code, facts, reasons)
    return f"{who} is included: {reason}" + (f"; {', '.join(extra)}" if extra else "")


def _filtered_out(memo: Memo, developer: Developer) -> str:
    """Why the memo's filters leave out a developer its countries or traffic take in
    ("" when they do not): activity, then its attributes in the memo's order."""
    if memo.active_only and not developer.is_active:
        return "the account is inactive"
    if (earlier := superseded_ids(memo)) and _exempted(earlier, developer.pk).exists():
        return "exempted from the memo this one corrects, after a dispute"
    if memo.active_since and (developer.last_active_at is None or developer.last_active_at.date() < memo.active_since):
        return f"not active since {memo.active_since}"
    for key, value in (memo.attribute_filters or {}).items():
        if (developer.attributes or {}).get(key) != value:
            return f"attribute {key} is not {value!r}"
    return ""


def _filters(memo: Memo) -> list[str]:
    """The memo's filters, as an included developer's line names them."""
    return [
        *(["active"] if memo.active_only else []),
        *([f"active since {memo.active_since}"] if memo.active_since else []),
        *(f"{k} = {v!r}" for k, v in (memo.attribute_filters or {}).items()),
    ]


def _not_in(
    memo: Memo, developer: Developer, facts: list[TrafficFact], traffic_regions: Iterable[Region] | None
) -> list[str]:
    why = []
    code = developer.country.code
    if memo.audience_basis != Basis.TRAFFIC:
        excluded = code in {c.code for c in memo.exclude_countries}
        why.append(f"{code} is " + ("an excluded country" if excluded else "in no included country or region"))
    if memo.audience_basis != Basis.ACCOUNT:
        first, last = traffic_window(memo)
        total = sum(f.requests for f in facts)
        why.append(
            f"{total:,} requests from {', '.join(traffic_codes(memo, traffic_regions)) or 'no traffic country'} between "
            f"{first} and {last}, fewer than {memo.traffic_min_requests:,}"
        )
    return why


def audience_counts(
    memo: Memo, regions: Iterable[Region] | None = None, traffic_regions: Iterable[Region] | None = None
) -> tuple[int, list[tuple[str, str, int, int, int]]]:
    """(total, [(account country code, its name, developers, of them in by the account's
    country, of them in by traffic), ...] largest first). In by both is counted in both."""
    # Only "either" asks who is in by what: under one basis everyone is in by that one,
    # and a second sum of the window's traffic would double the count's cost.
    by_account = Count("id", filter=Q(country__in=list(audience_reasons(memo, regions))))
    by_traffic: Any = Value(0, output_field=IntegerField())
    if memo.audience_basis == Basis.TRAFFIC:
        by_traffic = Count("id")
    elif memo.audience_basis == Basis.EITHER:
        by_traffic = Count("id", filter=_in_by_traffic(memo, traffic_regions))
    rows = (
        memo_audience(memo, regions, traffic_regions)
        .values_list("country")
        .annotate(n=Count("id"), account=by_account, traffic=by_traffic)
        .order_by("-n", "country")
    )
    # values_list() gives the stored code, not the Country the model's attribute is typed as.
    by_country = [
        (code, countries.name(code), int(n), int(account), int(traffic))
        for code, n, account, traffic in cast(list[tuple[str, int, int, int]], list(rows))
    ]
    return sum(row[2] for row in by_country), by_country


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
