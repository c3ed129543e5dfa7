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

from django.core.exceptions import EmptyResultSet
from django.db import connection

from memo_service.developers.models import TrafficObservation
from memo_service.lib.db import in_ids, statistics_refresh
from memo_service.memos.audience import (
    REASON_CHARS,
    TrafficFact,
    audience_pages,
    audience_reasons,
    inclusion_reason,
    memo_audience,
    traffic_codes,
    traffic_enough,
    traffic_facts,
    traffic_window,
)
from memo_service.memos.models import AudienceSnapshot, Memo

# Developers of the table per page of the Python path (one read, one insert each); the
# approval holds one transaction throughout, so pages only bound its memory.
SNAPSHOT_PAGE = 50_000

TRAFFIC = TrafficObservation._meta.db_table
SNAPSHOT = AudienceSnapshot._meta.db_table
CANDIDATES = "snapshot_candidates"  # a temporary table: the developers every rule but the basis lets in
# audience.TrafficFact's text and JSON, and audience.inclusion_reason, in SQL.
SNAPSHOT_SQL = f"""
WITH facts AS (
  SELECT t.developer_id, t.country, count(DISTINCT t.day) AS days, min(t.day) AS first_day,
         max(t.day) AS last_day, sum(t.requests) AS requests, coalesce(max(t.geo_database), '') AS geo
  FROM {TRAFFIC} t JOIN {CANDIDATES} c ON c.id = t.developer_id
  WHERE %(by_traffic)s AND t.country = ANY(%(codes)s::text[]) AND t.day BETWEEN %(first)s AND %(last)s
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
  FROM {CANDIDATES} a
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
    if connection.vendor == "postgresql" if fast is None else fast:
        _snapshot_sql(memo, reasons)
    else:
        for audience in audience_pages(memo, SNAPSHOT_PAGE):
            # values_list() gives the stored code, not the Country the model's attribute is typed as.
            if page := cast(list[tuple[int, str]], list(audience.values_list("id", "country"))):
                _page_python(memo, page, reasons)
    statistics_refresh(AudienceSnapshot)  # audience_changes joins it with the developers


def traffic_of(memo: Memo, developer_ids: list[int]) -> dict[int, list[TrafficFact]]:
    """{developer id: the traffic that put them in}, for what templates see of them
    (developer.traffic_countries, developer.traffic_summary): as the snapshot kept it once
    the memo is approved, as it is now before. Nobody's for an audience by account, or
    for a developer in by the account's country alone. One query."""
    if memo.audience_basis == Memo.Basis.ACCOUNT or not developer_ids:
        return {}
    if memo.approved_rules:
        kept = AudienceSnapshot.objects.filter(memo=memo, developer_id__in=in_ids(developer_ids))
        found = {
            dev: [TrafficFact.from_json(f) for f in facts] for dev, facts in kept.values_list("developer_id", "traffic")
        }
    else:
        found = traffic_facts(memo, developer_ids)
    return {dev: facts for dev, facts in found.items() if traffic_enough(memo, facts)}


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


def _snapshot_sql(memo: Memo, reasons: dict[str, str]) -> None:
    """The candidates (every rule but the basis) into a temporary table, then one
    statement that sums their traffic once, as the hand-written query would, decides who
    is in by it and writes every row with its reason."""
    first, last = traffic_window(memo)
    params: dict[str, Any] = {
        "memo": memo.pk,
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
        cursor.execute(f"DROP TABLE IF EXISTS {CANDIDATES}")
        cursor.execute(f"CREATE TEMPORARY TABLE {CANDIDATES} (id bigint PRIMARY KEY, country varchar(2))")
        try:
            # Written by the database from memo_audience's own query: no row travels through Python.
            candidates = memo_audience(memo, candidates=True).values_list("id", "country")
            try:
                select, select_params = candidates.query.sql_with_params()
            except EmptyResultSet:  # rules that can hold nobody (no country at all)
                return
            cursor.execute(f"INSERT INTO {CANDIDATES} (id, country) {select}", select_params)
            cursor.execute(f"ANALYZE {CANDIDATES}")  # a temporary table has no statistics of its own
            cursor.execute(SNAPSHOT_SQL, params)
        finally:
            cursor.execute(f"DROP TABLE IF EXISTS {CANDIDATES}")
