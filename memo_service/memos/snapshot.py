"""The audience snapshot: who a memo's rules chose when it was approved (or when its
sender accepted the changes since), each developer with why they are in; the send's
deliveries take their reason from it and the developer's page the traffic that put them
in.

On PostgreSQL a page is written by one statement that sums the traffic and writes every
reason itself (`SNAPSHOT_SQL`), instead of reading the sums into Python and writing the
rows back; `tests/test_snapshot.py` pins it to the Python path, row for row.
"""

from __future__ import annotations

from typing import Any, cast

from django.db import connection

from memo_service.db import in_ids, statistics_refresh
from memo_service.developers.models import TrafficObservation
from memo_service.memos.audience import (
    TrafficFact,
    audience_pages,
    audience_reasons,
    inclusion_reason,
    traffic_codes,
    traffic_facts,
    traffic_window,
)
from memo_service.memos.models import AudienceSnapshot, Memo

# Developers of the table per page: one statement (or one read and one insert) each; the
# approval holds one transaction throughout, so pages only bound the memory of one.
SNAPSHOT_PAGE = 50_000
# Why a developer is in keeps at most what a Delivery's reason holds.
REASON_CHARS = 300

TRAFFIC = TrafficObservation._meta.db_table
SNAPSHOT = AudienceSnapshot._meta.db_table
# audience.TrafficFact's text and JSON, and audience.inclusion_reason, in SQL.
SNAPSHOT_SQL = f"""
WITH candidates AS (
  SELECT * FROM unnest(%(ids)s::bigint[], %(countries)s::text[]) AS a(id, country)
), facts AS (
  SELECT t.developer_id, t.country, count(DISTINCT t.day) AS days, min(t.day) AS first_day,
         max(t.day) AS last_day, sum(t.requests) AS requests, coalesce(max(t.geo_database), '') AS geo
  FROM {TRAFFIC} t
  WHERE %(by_traffic)s AND t.developer_id = ANY(%(ids)s::bigint[]) AND t.country = ANY(%(codes)s::text[])
    AND t.day BETWEEN %(first)s AND %(last)s
  GROUP BY t.developer_id, t.country
), per_developer AS (
  SELECT developer_id, sum(requests) AS total,
         string_agg(
           'traffic from ' || country || ' on '
           || CASE WHEN days = 1 THEN first_day::text
                   ELSE days || ' days between ' || first_day::text || ' and ' || last_day::text END
           || ', ' || to_char(requests, 'FM999,999,999,999,999,999') || ' requests'
           || CASE WHEN geo <> '' THEN ' (' || geo || ')' ELSE '' END,
           '; ' ORDER BY requests DESC, country) AS text,
         jsonb_agg(jsonb_build_array(country, days, first_day::text, last_day::text, requests, geo)
                   ORDER BY requests DESC, country) AS traffic
  FROM facts GROUP BY developer_id
), reasons AS (
  SELECT a.id, a.country, r.reason AS by_account, p.total >= %(min_requests)s AS by_traffic,
         concat_ws('; ',
           CASE WHEN %(by_account)s THEN r.reason END,
           CASE WHEN p.total >= %(min_requests)s THEN p.text END) AS reason,
         coalesce(p.traffic, '[]'::jsonb) AS traffic
  FROM candidates a
  LEFT JOIN per_developer p ON p.developer_id = a.id
  LEFT JOIN unnest(%(account_codes)s::text[], %(account_reasons)s::text[]) AS r(code, reason) ON r.code = a.country
)
INSERT INTO {SNAPSHOT} (memo_id, developer_id, country, reason, traffic)
SELECT %(memo)s, id, country,
       CASE WHEN char_length(reason) <= %(reason_chars)s THEN reason
            ELSE left(reason, %(reason_chars)s - 1) || '…' END,
       traffic
FROM reasons
-- The candidates passed every rule but the basis, decided here (memo_audience's, in SQL):
WHERE NOT %(by_traffic)s OR (%(by_account)s AND by_account IS NOT NULL) OR by_traffic
"""


def audience_snapshot(memo: Memo, *, fast: bool | None = None) -> None:
    """Snapshot who the audience holds now, each with why they are in (the traffic that
    put them in, as of the approved window). `fast`: the PostgreSQL statement (the
    default there) or the Python path."""
    AudienceSnapshot.objects.filter(memo=memo).delete()
    reasons = audience_reasons(memo)
    write = _page_sql if (connection.vendor == "postgresql" if fast is None else fast) else _page_python
    # The statement decides who is in by traffic as it sums their traffic: it is given the
    # page's candidates, not its audience, which would sum the same traffic a second time.
    for audience in audience_pages(memo, SNAPSHOT_PAGE, candidates=write is _page_sql):
        # values_list() gives the stored code, not the Country the model's attribute is typed as.
        if page := cast(list[tuple[int, str]], list(audience.values_list("id", "country"))):
            write(memo, page, reasons)
    statistics_refresh(AudienceSnapshot)  # audience_changes joins it with the developers


def traffic_of(memo: Memo, developer_ids: list[int]) -> dict[int, list[TrafficFact]]:
    """{developer id: the traffic that put them in}, for what templates see of them
    (developer.traffic_countries, developer.traffic_summary): as the snapshot kept it once
    the memo is approved, as it is now before. Nobody's for an audience by account, or
    for a developer in by the account's country alone. One query."""
    if memo.audience_basis == Memo.Basis.ACCOUNT or not developer_ids:
        return {}
    kept = AudienceSnapshot.objects.filter(memo=memo, developer_id__in=in_ids(developer_ids)).values_list(
        "developer_id", "traffic"
    )
    if memo.approved_rules:
        found = {dev: [TrafficFact.from_json(f) for f in facts] for dev, facts in kept}
    else:
        found = traffic_facts(memo, developer_ids)
    return {dev: facts for dev, facts in found.items() if sum(f.requests for f in facts) >= memo.traffic_min_requests}


def _page_python(memo: Memo, page: list[tuple[int, str]], reasons: dict[str, str]) -> None:
    facts = traffic_facts(memo, [dev for dev, _ in page])
    AudienceSnapshot.objects.bulk_create(
        [
            AudienceSnapshot(
                memo=memo,
                developer_id=dev,
                country=country,
                reason=inclusion_reason(memo, country, facts.get(dev, []), reasons),
                traffic=[f.as_json() for f in facts.get(dev, [])],
            )
            for dev, country in page
        ]
    )


def _page_sql(memo: Memo, page: list[tuple[int, str]], reasons: dict[str, str]) -> None:
    first, last = traffic_window(memo)
    params: dict[str, Any] = {
        "memo": memo.pk,
        "ids": [dev for dev, _ in page],
        "countries": [country for _, country in page],
        "by_account": memo.audience_basis != Memo.Basis.TRAFFIC,
        "by_traffic": memo.audience_basis != Memo.Basis.ACCOUNT,
        "account_codes": list(reasons),
        "account_reasons": list(reasons.values()),
        "codes": traffic_codes(memo),
        "first": first,
        "last": last,
        "min_requests": memo.traffic_min_requests,
        "reason_chars": REASON_CHARS,
    }
    with connection.cursor() as cursor:
        cursor.execute(SNAPSHOT_SQL, params)
