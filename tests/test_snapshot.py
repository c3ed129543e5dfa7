"""The audience snapshot: PostgreSQL's one-statement page is the Python path, row for row."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from memo_service.developers.models import Developer, TrafficObservation
from memo_service.memos.models import AudienceSnapshot, Memo
from memo_service.memos.snapshot import audience_snapshot
from tests.conftest import make_developer, make_memo

pytestmark = pytest.mark.django_db
TODAY = timezone.now().date()


def rows(memo: Memo) -> dict[int, tuple[str, str, list[object]]]:
    return {s.developer_id: (s.country, s.reason, s.traffic) for s in AudienceSnapshot.objects.filter(memo=memo)}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the fast path is PostgreSQL's")
@pytest.mark.parametrize("basis", [Memo.Basis.ACCOUNT, Memo.Basis.TRAFFIC, Memo.Basis.EITHER])
def test_the_fast_snapshot_writes_what_the_python_path_writes(developers, basis):
    memo = make_memo(audience_basis=basis, traffic_countries=["CN", "HK", "IR", "MO", "RU"], traffic_min_requests=5)
    many = make_developer("many-1", "DE")
    for n, code in enumerate(["CN", "HK", "IR", "MO", "RU"]):  # five facts: a reason past 300 characters
        for day in range(3):
            TrafficObservation.objects.create(
                developer=many,
                country=code,
                day=TODAY - dt.timedelta(days=day),
                requests=1_000_000 + n,
                source=f"s{day % 2}",
                geo_database="GeoLite2-Country 2026-12-01",
            )
    for who, code, requests, geo in [("us-1", "HK", 4, ""), ("us-1", "HK", 1, "iptocc 3.3.170"), ("cn-1", "RU", 2, "")]:
        TrafficObservation.objects.create(
            developer=Developer.objects.get(external_id=who),
            country=code,
            day=TODAY,
            requests=requests,
            source=f"feed-{requests}",
            geo_database=geo,
        )
    make_developer("quiet-1", "RU")  # in by account alone
    asleep = make_developer("asleep-1", "US", is_active=False)  # heavy traffic, but the memo is for active ones
    TrafficObservation.objects.create(developer=asleep, country="CN", day=TODAY, requests=99, source="s0")
    audience_snapshot(memo, fast=False)
    expected = rows(memo)
    audience_snapshot(memo, fast=True)
    assert rows(memo) == expected
    assert expected  # the test compares something
    if basis != Memo.Basis.ACCOUNT:
        assert len(expected[many.pk][1]) == 300 and expected[many.pk][1].endswith("…")
    assert asleep.pk not in expected
    in_by_traffic = {Developer.objects.get(pk=pk).external_id for pk, row in expected.items() if row[2]}
    if basis == Memo.Basis.TRAFFIC:  # cn-1's 2 requests are under the threshold of 5
        assert set(Developer.objects.filter(pk__in=expected).values_list("external_id", flat=True)) == in_by_traffic
