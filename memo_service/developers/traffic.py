"""Observed API traffic in: each line cleaned, summed into a daily rollup per developer,
country, day and source, and written in one transaction.

A feed's lines are either already resolved (`country`, as a CDN's logs carry it) or an
address (`ip`, resolved by developers/geo.py); `requests` defaults to 1, so a raw access
log's lines are counted. Re-importing a day of a source replaces that day's rollups of
that source for the developers it names: an import is idempotent. Lines go through a
temporary table in chunks, so memory stays flat however long the feed is; nothing
reaches the rollups until the whole feed was read.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django_countries import countries

from memo_service.developers.geo import GeoDatabase, geo_database
from memo_service.developers.importing import RowError
from memo_service.developers.models import Developer, TrafficObservation
from memo_service.developers.traffic_file import read_traffic
from memo_service.lib.db import statistics_refresh

# Lines cleaned, looked up and staged at a time: one query for their accounts, one
# insert; small enough that a chunk's rows take a few MB.
CHUNK_LINES = 20_000
# A feed of a million bad lines must not hold a million messages: the first are listed,
# the rest counted.
MAX_ERRORS_LISTED = 1_000
SOURCE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,50}$")
STAGING = "traffic_staging"

# (line, external_id, country, day, requests, geo database)
Clean = tuple[int, str, str, dt.date, int, str]


@dataclass
class TrafficReport:
    lines: int = 0
    rollups: int = 0  # (developer, country, day) rows written
    errors: list[RowError] = field(default_factory=list)
    invalid: int = 0  # lines refused, listed or not
    applied: bool = False
    listed_max: int = MAX_ERRORS_LISTED

    def refuse(self, line: int, external_id: str, reason: str) -> None:
        self.invalid += 1
        if len(self.errors) < self.listed_max:
            self.errors.append(RowError(line, external_id, reason))


UNIX_SECONDS_RE = re.compile(r"\d{9,10}(?:\.\d+)?")
WHOLE_RE = re.compile(r"-?\d{1,18}")
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def _day(raw: dict[str, Any], today: dt.date) -> dt.date:
    if day_text := str(raw.get("day") or "").strip():
        try:
            day = dt.date.fromisoformat(day_text)
        except ValueError:
            raise ValueError(f"day {day_text[:40]!r} is not a date (YYYY-MM-DD)") from None
    elif stamp := str(raw.get("timestamp") or "").strip():
        day = _timestamp_day(stamp)
    else:
        raise ValueError("a day or a timestamp is required")
    if day > today:
        raise ValueError(f"day {day} is in the future")
    return day


def _timestamp_day(stamp: str) -> dt.date:
    """The UTC day of Unix seconds or of an ISO 8601 time (no offset: UTC)."""
    if UNIX_SECONDS_RE.fullmatch(stamp):
        return dt.date.fromordinal(EPOCH_ORDINAL + int(float(stamp)) // 86_400)
    try:
        moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"timestamp {stamp[:40]!r} is not an ISO 8601 time or Unix seconds") from None
    return moment.astimezone(dt.UTC).date() if moment.tzinfo else moment.date()


def _requests(raw: dict[str, Any]) -> int:
    value = raw.get("requests")
    if value is None or value == "":
        return 1  # a raw access log's line is one request
    text = str(value).strip()
    if isinstance(value, bool) or not WHOLE_RE.fullmatch(text):
        raise ValueError(f"requests {text[:40]!r} is not a whole number")
    if (count := int(text)) < 0:
        raise ValueError(f"requests {count} is negative")
    return count


def _country(raw: dict[str, Any], geo: GeoDatabase) -> tuple[str, str]:
    """(country code, the geolocation database that resolved it, or "")."""
    if code := str(raw.get("country") or "").strip().upper():
        if len(code) != 2 or code not in countries:
            raise ValueError(f"country {code[:40]!r} is not an ISO 3166 alpha-2 code")
        return code, ""
    if ip := str(raw.get("ip") or ""):
        return geo.country(ip), geo.name
    raise ValueError("a country or an ip is required")


def traffic_clean(raw: dict[str, Any], *, today: dt.date, geo: GeoDatabase) -> tuple[str, str, dt.date, int, str]:
    """(external_id, country, day, requests, geo database) of one line; ValueError with
    every reason it is refused."""
    reasons: list[str] = []
    if not (external_id := str(raw.get("external_id") or "").strip()):
        reasons.append("external_id is required")
    code = resolved_by = ""
    day, count = today, 0
    try:
        code, resolved_by = _country(raw, geo)
    except ValueError as exc:
        reasons.append(str(exc))
    try:
        day = _day(raw, today)
    except ValueError as exc:
        reasons.append(str(exc))
    try:
        count = _requests(raw)
    except ValueError as exc:
        reasons.append(str(exc))
    if reasons:
        raise ValueError("; ".join(reasons))
    return external_id, code, day, count, resolved_by


def traffic_import(
    *,
    stream: IO[bytes],
    source: str,
    all_or_nothing: bool = False,
    progress: Callable[[int], None] | None = None,
) -> TrafficReport:
    """Sum a feed's lines into rollups of `source`. Bad lines are refused with their
    number and reason and the rest go in; with all_or_nothing one bad line keeps them
    all out. Raises ImportFileError when the file as a whole cannot be read."""
    _source_checked(source)
    report = TrafficReport()
    lines = read_traffic(stream)
    today, geo = timezone.now().date(), geo_database()

    def cleaned() -> Iterator[Clean]:
        for number, raw in lines:
            report.lines += 1
            if progress:
                progress(report.lines)
            if isinstance(raw, str):
                report.refuse(number, "", raw)
                continue
            try:
                yield (number, *traffic_clean(raw, today=today, geo=geo))
            except ValueError as exc:
                report.refuse(number, str(raw.get("external_id") or "")[:100], str(exc))

    _import(cleaned(), source, report, all_or_nothing)
    report.errors.sort(key=lambda e: e.line)  # accounts are looked up a chunk after the lines are read
    return report


def traffic_sync(items: list[dict[str, Any]]) -> TrafficReport:
    """The bulk API's observations: bad items refused by index (every one), the rest
    summed in."""
    report = TrafficReport(listed_max=len(items))
    today, geo = timezone.now().date(), geo_database()
    by_source: dict[str, list[Clean]] = {}
    for index, raw in enumerate(items):
        report.lines += 1
        source = str(raw.get("source") or "api")
        try:
            _source_checked(source)
            by_source.setdefault(source, []).append((index, *traffic_clean(raw, today=today, geo=geo)))
        except ValueError as exc:
            report.refuse(index, str(raw.get("external_id") or "")[:100], str(exc))
    with transaction.atomic():
        for source, rows in by_source.items():
            _import(iter(rows), source, report, all_or_nothing=False)
    report.errors.sort(key=lambda e: e.line)
    return report


def _source_checked(source: str) -> None:
    if not SOURCE_RE.fullmatch(source):
        raise ValueError(f"source {source[:60]!r}: 1 to 50 letters, digits and _ . : -")


def _import(rows: Iterator[Clean], source: str, report: TrafficReport, all_or_nothing: bool) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {STAGING}")
        cursor.execute(
            f"CREATE TEMPORARY TABLE {STAGING} (developer_id bigint, country varchar(2), day date,"
            " requests bigint, geo_database varchar(100))"
        )
        try:
            accounts = _Accounts()
            while chunk := _take(rows, CHUNK_LINES):
                _stage(cursor, _known(chunk, report, accounts))
            if report.invalid and all_or_nothing:
                return
            with transaction.atomic():
                report.rollups += _merge(cursor, source)
            report.applied = True
        finally:
            cursor.execute(f"DROP TABLE IF EXISTS {STAGING}")
    statistics_refresh(TrafficObservation)


def _take(rows: Iterator[Clean], n: int) -> list[Clean]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= n:
            break
    return chunk


UNKNOWN, ERASED = 0, -1
# Accounts a feed's import remembers (a log names each on many lines): about 120 bytes
# each, so at most about 250 MB; past it, it starts again.
MAX_ACCOUNTS_KEPT = 2_000_000


class _Accounts:
    """external_id → developer id (or UNKNOWN, ERASED) for one import, each asked of the
    database once."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def of(self, external_ids: set[str]) -> dict[str, int]:
        missing = [e for e in external_ids if e not in self.ids]
        if len(self.ids) + len(missing) > MAX_ACCOUNTS_KEPT:
            self.ids.clear()
            missing = list(external_ids)
        self.ids.update(dict.fromkeys(missing, UNKNOWN))
        for external_id, pk, erased_at in _accounts(missing) if missing else ():
            self.ids[external_id] = ERASED if erased_at else pk
        return self.ids


def _known(
    chunk: list[Clean], report: TrafficReport, accounts: _Accounts
) -> Iterable[tuple[int, str, dt.date, int, str]]:
    """The chunk's lines summed by (developer, country, day), refusing those of accounts
    that do not exist or were erased."""
    ids = accounts.of({row[1] for row in chunk})
    summed: dict[tuple[int, str, dt.date], list[Any]] = {}
    for line, external_id, code, day, count, geo in chunk:
        if (developer_id := ids[external_id]) <= 0:
            why = "the developer was erased" if developer_id == ERASED else "no developer has this external_id"
            report.refuse(line, external_id, why)
            continue
        key = (developer_id, code, day)
        if key in summed:
            summed[key][0] += count
        else:
            summed[key] = [count, geo]
    return ((pk, code, day, count, geo) for (pk, code, day), (count, geo) in summed.items())


def _accounts(external_ids: list[str]) -> Iterable[tuple[str, int, Any]]:
    """(external_id, id, erased_at) of the accounts that exist. On PostgreSQL the ids
    travel as one array (psycopg composes a 20,000-placeholder IN list in Python, which
    took longer than the rest of the chunk); SQLite takes at most 32,766 parameters."""
    developers = Developer.objects.values_list("external_id", "pk", "erased_at")
    if connection.vendor == "postgresql":
        return developers.filter(external_id__in=RawSQL("SELECT unnest(%s::text[])", (external_ids,)))
    return (
        row
        for start in range(0, len(external_ids), 5_000)
        for row in developers.filter(external_id__in=external_ids[start : start + 5_000])
    )


def _stage(cursor: Any, rows: Iterable[tuple[int, str, dt.date, int, str]]) -> None:
    if connection.vendor == "postgresql":
        with cursor.copy(f"COPY {STAGING} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        cursor.executemany(f"INSERT INTO {STAGING} VALUES (%s, %s, %s, %s, %s)", list(rows))


def _merge(cursor: Any, source: str) -> int:
    """Replace the rollups of `source` for each (developer, day) the feed names by the
    feed's sums; the number of rollups written."""
    table = TrafficObservation._meta.db_table
    cursor.execute(f"CREATE INDEX {STAGING}_key ON {STAGING} (developer_id, day)")
    cursor.execute(
        f"DELETE FROM {table} WHERE source = %(source)s AND EXISTS ("
        f" SELECT 1 FROM {STAGING} s WHERE s.developer_id = {table}.developer_id AND s.day = {table}.day)",
        {"source": source},
    )
    cursor.execute(
        f"INSERT INTO {table} (developer_id, country, day, source, requests, geo_database)"
        f" SELECT developer_id, country, day, %(source)s, SUM(requests), MAX(geo_database)"
        f" FROM {STAGING} GROUP BY developer_id, country, day",
        {"source": source},
    )
    return int(cursor.rowcount)
