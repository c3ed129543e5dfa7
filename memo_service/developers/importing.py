"""Developer accounts in: clean one row, upsert many, read a CSV file.

The CSV import and the sync API share `developer_clean` and `developers_upsert`, so a
row means the same thing whichever way it arrives.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.utils import timezone, translation
from django.utils.dateparse import parse_date, parse_datetime
from django_countries import countries

from memo_service.db import statistics_refresh
from memo_service.developers.models import Developer

REQUIRED = ("external_id", "email", "country")
OPTIONAL = ("name", "organization", "org_contact_email", "language", "is_active", "last_active_at", "attributes")
COLUMNS = REQUIRED + OPTIONAL
MAX_EMAIL = 254  # RFC 5321's limit on a forward path
MAX_TEXT = {"external_id": 100, "name": 200, "organization": 200}
# Rows per ORM upsert (SQLite): one SELECT and one INSERT … ON CONFLICT per chunk;
# 2,000 rows keep each statement well under SQLite's parameter limit.
CHUNK = 2_000
TRUE = {"true", "1", "yes", "y", "t"}
FALSE = {"false", "0", "no", "n", "f"}
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")
# export_developers prefixes cells like these with ' (formula-injection guard); undo it.
ESCAPED_FORMULA = re.compile(r"^'[=+\-@\t\r]")
EARLIEST, LATEST = dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1)
# Attributes are an account's facts ({"plan": "pro", "limits": {"rpm": 600}}): 20 levels
# is far past any real use, and keeps every later walk of them (JSON encoding, the
# database's JSON functions, a template) short.
MAX_ATTRIBUTE_DEPTH = 20
# A header names a dozen columns; 64 KiB is far past any real one, and a file whose first
# line is longer is not a CSV with a header (read whole, a 50 MB line took the process's
# memory and then failed in the csv module).
MAX_HEADER_CHARS = 65_536


class ImportFileError(Exception):
    """The file as a whole cannot be read (encoding, header)."""


@dataclass
class RowError:
    line: int  # line number in the file, or item index in an API request
    external_id: str
    reason: str

    def __str__(self) -> str:
        who = f" ({self.external_id})" if self.external_id else ""
        return f"line {self.line}{who}: {self.reason}"


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    applied: bool = False


def _text(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return text[1:] if ESCAPED_FORMULA.match(text) else text


@functools.lru_cache(maxsize=4096)  # a million rows name a few hundred countries
def _country_code(value: str) -> str:
    code = countries.alpha2(value) if len(value) <= 3 else ""
    if not code:
        with translation.override("en"):
            code = countries.by_name(value) or ""
    return code


def _country(value: str) -> str:
    code = _country_code(value)
    if not code:
        raise ValueError(f"unknown country {value!r} (use alpha-2, alpha-3 or the English name)")
    return code


def _email(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("invalid email: contains a line break")
    if len(value) > MAX_EMAIL:
        raise ValueError(f"invalid email: longer than {MAX_EMAIL} characters")
    try:
        validate_email(value)
    except ValidationError:
        raise ValueError(f"invalid email {value!r}") from None
    return value


def _language(value: str) -> str:
    code = value.lower().replace("_", "-")
    if not code:
        return "en"
    try:
        return translation.get_supported_language_variant(code)
    except LookupError:
        if LANGUAGE_RE.match(code):
            return code  # kept; they get the English text until there is a translation
        raise ValueError(f"invalid language code {value!r}") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in TRUE or text == "":
        return True
    if text in FALSE:
        return False
    raise ValueError(f"is_active must be true or false, not {value!r}")


def _datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    text = _text(value)
    if not text:
        return None
    try:
        parsed = parse_datetime(text)
        if parsed is None and (day := parse_date(text)) is not None:
            parsed = dt.datetime.combine(day, dt.time())
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"last_active_at {text!r} is not an ISO 8601 date or time")
    if not (EARLIEST <= parsed.replace(tzinfo=None) <= LATEST):
        raise ValueError(f"last_active_at {text!r} is not between {EARLIEST.year} and {LATEST.year}")
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=dt.UTC)


def _json_problem(value: Any) -> str:
    """Why a parsed JSON value cannot be stored ('' if it can): NaN and Infinity are not
    JSON (Python reads and writes them, the database refuses them), and nesting is capped."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return "attributes contain NaN or Infinity, which JSON does not allow"
        if isinstance(item, (dict, list)):
            if depth > MAX_ATTRIBUTE_DEPTH:
                return f"attributes are nested more than {MAX_ATTRIBUTE_DEPTH} levels deep"
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return ""


def _attributes(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        if problem := _json_problem(value):
            raise ValueError(problem)
        if "\\u0000" in json.dumps(value):
            raise ValueError("attributes contain a NUL character")
        return value
    text = _text(value)
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise ValueError(f"attributes are nested more than {MAX_ATTRIBUTE_DEPTH} levels deep") from None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ValueError("attributes must be a JSON object")
    if problem := _json_problem(parsed):
        raise ValueError(problem)
    return parsed


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "external_id": _text,
    "email": lambda v: _email(_text(v)),
    "country": lambda v: _country(_text(v)),
    "name": _text,
    "organization": _text,
    "org_contact_email": lambda v: _email(_text(v)) if _text(v) else "",
    "language": lambda v: _language(_text(v)),
    "is_active": _bool,
    "last_active_at": _datetime,
    "attributes": _attributes,
}


def developer_clean(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Validate one incoming account. Returns (model values, reasons it is invalid).

    Only the keys present in `raw` are returned, so a missing column is left as it is;
    keys that are not columns go to `attributes`.
    """
    # PostgreSQL cannot store NUL in text or JSON; nobody means to send one.
    if any(isinstance(v, str) and "\x00" in v for v in raw.values()) or "\x00" in "".join(raw):
        return {}, ["contains a NUL character"]
    values: dict[str, Any] = {}
    errors = [f"{name} is required" for name in REQUIRED if not _text(raw.get(name))]
    for name, value in raw.items():
        convert = CONVERTERS.get(name)
        if convert is None or (name in REQUIRED and not _text(value)):
            continue
        try:
            values[name] = convert(value)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        limit = MAX_TEXT.get(name)
        if limit and len(values[name]) > limit:
            errors.append(f"{name} is longer than {limit} characters")
    extra = {k: _text(v) for k, v in raw.items() if k not in CONVERTERS and k}
    if extra:
        values["attributes"] = {**values.get("attributes", {}), **extra}
    return values, errors


def developers_upsert(rows: Iterable[dict[str, Any]]) -> tuple[int, int, int]:
    """Insert new accounts and update changed ones, by external_id; identical rows are
    left alone, and so are erased accounts (an import never brings their data back);
    attributes are merged into those stored. All rows must carry the same keys.
    Returns (created, updated, unchanged).

    Rows are streamed: on PostgreSQL through COPY into a temporary table and one
    INSERT … ON CONFLICT (a million rows in seconds, memory flat); elsewhere in chunks
    through the ORM.
    """
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return 0, 0, 0
    fields = [f for f in first if f != "external_id"]
    stream = itertools.chain([first], iterator)
    if connection.vendor == "postgresql":
        return _upsert_copy(stream, fields)
    totals = (0, 0, 0)
    for chunk in _chunks(stream, CHUNK):
        totals = tuple(a + b for a, b in zip(totals, _upsert_orm(chunk, fields), strict=True))  # type: ignore[assignment]
    return totals


def _upsert_orm(rows: list[dict[str, Any]], fields: list[str]) -> tuple[int, int, int]:
    existing = {
        row[0]: row[1:]
        for row in Developer.objects.filter(external_id__in=[r["external_id"] for r in rows]).values_list(
            "external_id", *fields
        )
    }
    erased = set(
        Developer.objects.filter(external_id__in=[r["external_id"] for r in rows], erased_at__isnull=False).values_list(
            "external_id", flat=True
        )
    )
    if "attributes" in fields:  # new attributes join those already stored
        at = fields.index("attributes")
        for r in rows:
            if r["external_id"] in existing:
                r["attributes"] = {**existing[r["external_id"]][at], **r["attributes"]}
    changed = [
        r
        for r in rows
        if r["external_id"] not in erased and existing.get(r["external_id"]) != tuple(r[f] for f in fields)
    ]
    if changed:
        Developer.objects.bulk_create(
            [Developer(**r) for r in changed],
            update_conflicts=True,
            unique_fields=["external_id"],
            update_fields=fields,
        )
    created = sum(1 for r in changed if r["external_id"] not in existing)
    return created, len(changed) - created, len(rows) - len(changed)


def _defaults_sql(columns: list[str]) -> tuple[list[str], list[str], list[Any]]:
    """For the columns a file does not have: (column names, SQL expressions, parameters)
    giving a new account the model's defaults (Django applies them in Python, so the
    schema has none)."""
    names, sql, params = [], [], []
    for model_field in Developer._meta.concrete_fields:
        if model_field.primary_key or model_field.column in columns:
            continue
        assert model_field.column is not None  # a concrete field has a column
        names.append(model_field.column)
        if getattr(model_field, "auto_now_add", False):
            sql.append("now()")
        else:
            sql.append(f"%s::{model_field.db_type(connection)}")
            params.append(model_field.get_db_prep_save(model_field.get_default(), connection))
    return names, sql, params


def _new_value(table: str, column: str) -> str:
    """An update's new value: the file's, except attributes, which join those stored."""
    if column == "attributes":
        return f"{table}.attributes || EXCLUDED.attributes"
    return f"EXCLUDED.{connection.ops.quote_name(column)}"


def _upsert_copy(rows: Iterable[dict[str, Any]], fields: list[str]) -> tuple[int, int, int]:
    q = connection.ops.quote_name
    table = q(Developer._meta.db_table)
    columns = ["external_id", *fields]
    types = {c: Developer._meta.get_field(c).db_type(connection) for c in columns}
    default_columns, default_sql, default_params = _defaults_sql(columns)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS pg_temp.developer_import")
        cursor.execute(
            "CREATE TEMPORARY TABLE developer_import ("
            + ", ".join(f"{q(c)} {types[c]}" for c in columns)
            + ") ON COMMIT DROP"
        )
        copy_sql = f"COPY developer_import ({', '.join(map(q, columns))}) FROM STDIN"
        with cursor.cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row([json.dumps(row[c]) if c == "attributes" else row[c] for c in columns])
        cursor.execute(
            f"""
            WITH written AS (
                INSERT INTO {table} ({", ".join(map(q, [*columns, *default_columns]))})
                SELECT {", ".join([*map(q, columns), *default_sql])} FROM developer_import
                ON CONFLICT (external_id) DO UPDATE
                SET {", ".join(f"{q(c)} = {_new_value(table, c)}" for c in fields)}
                WHERE {table}.erased_at IS NULL AND (
                    {" OR ".join(f"{table}.{q(c)} IS DISTINCT FROM {_new_value(table, c)}" for c in fields)})
                RETURNING (xmax = 0) AS created
            )
            SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created),
                   (SELECT count(*) FROM developer_import)
            FROM written
            """,
            default_params,
        )
        created, updated, total = cursor.fetchone()
        cursor.execute("DROP TABLE developer_import")
    statistics_refresh(Developer)
    return created, updated, total - created - updated


def _sniff_delimiter(header_line: str) -> str:
    return ";" if header_line.count(";") > header_line.count(",") else ","


def read_csv(stream: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header and an iterator of (line number, row) from a UTF-8 CSV (BOM optional,
    comma or semicolon). Rows with the wrong number of cells come with a '__error__' key."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        header_line = text.readline(MAX_HEADER_CHARS + 1)
    except UnicodeDecodeError:
        raise ImportFileError("the file is not UTF-8 text") from None
    if len(header_line) > MAX_HEADER_CHARS:
        raise ImportFileError(
            f"line 1: the header is longer than {MAX_HEADER_CHARS:,} characters; "
            f"the first line must name the columns ({', '.join(REQUIRED)}, …)"
        )
    delimiter = _sniff_delimiter(header_line)
    try:
        header = [h.strip().lower() for h in next(csv.reader([header_line], delimiter=delimiter), [])]
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ImportFileError(f"the header must name the columns {', '.join(REQUIRED)}; missing: {', '.join(missing)}")
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise ImportFileError(f"the header repeats the columns {', '.join(duplicated)}")

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        reader = csv.reader(text, delimiter=delimiter)
        line = 2
        try:
            for cells in reader:
                if cells:
                    if len(cells) != len(header):
                        yield (
                            line,
                            {
                                "__error__": f"expected {len(header)} cells, found {len(cells)}",
                                "external_id": dict(zip(header, cells, strict=False)).get("external_id", ""),
                            },
                        )
                    else:
                        yield line, dict(zip(header, cells, strict=True))
                line = reader.line_num + 2
        except UnicodeDecodeError:
            raise ImportFileError(f"the file is not UTF-8 text (near line {line})") from None
        except csv.Error as exc:
            raise ImportFileError(f"line {line}: {exc}") from None

    return header, rows()


def developers_import(
    *,
    stream: IO[bytes],
    skip_invalid: bool = False,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Upsert the accounts in a CSV file, in one transaction.

    By default a file with any bad row changes nothing; with skip_invalid the good rows
    are applied and the bad ones reported. dry_run reports what would change.
    """
    report = ImportReport()
    _, rows = read_csv(stream)
    seen: set[str] = set()
    with transaction.atomic():
        report.created, report.updated, report.unchanged = developers_upsert(_clean_rows(rows, seen, report, progress))
        report.applied = not dry_run and (skip_invalid or not report.errors)
        if not report.applied:
            transaction.set_rollback(True)
    return report


def _clean_rows(
    rows: Iterable[tuple[int, dict[str, str]]],
    seen: set[str],
    report: ImportReport,
    progress: Callable[[int], None] | None,
) -> Iterator[dict[str, Any]]:
    for line, raw in rows:
        report.rows += 1
        if progress:
            progress(report.rows)
        external_id = _text(raw.get("external_id"))
        if "__error__" in raw:
            report.errors.append(RowError(line, external_id, raw["__error__"]))
            continue
        values = _row_checked(raw, line, seen, report, "the file")
        if values is not None:
            yield values


def _row_checked(
    raw: dict[str, Any], where: int, seen: set[str], report: ImportReport, source: str
) -> dict[str, Any] | None:
    """The row's model values, or None after reporting why it is bad (a duplicate
    external_id included)."""
    external_id = _text(raw.get("external_id"))
    values, errors = developer_clean(raw)
    if external_id in seen:
        errors.append(f"duplicate external_id: it appears earlier in {source}")
    if errors:
        report.errors.append(RowError(where, external_id, "; ".join(errors)))
        return None
    seen.add(external_id)
    return values


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def developers_sync(items: list[dict[str, Any]]) -> ImportReport:
    """Upsert accounts sent by the sync API; bad items are reported by index, good ones applied."""
    report = ImportReport(rows=len(items))
    seen: set[str] = set()
    by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for index, raw in enumerate(items):
        values = _row_checked({k: v for k, v in raw.items() if v is not None}, index, seen, report, "the request")
        if values is not None:
            by_keys.setdefault(tuple(sorted(values)), []).append(values)
    with transaction.atomic():
        for rows in by_keys.values():  # one upsert per set of fields sent
            created, updated, unchanged = developers_upsert(rows)
            report.created += created
            report.updated += updated
            report.unchanged += unchanged
    report.applied = True
    return report


def developer_deactivate(*, developer: Developer) -> bool:
    """Mark an account inactive (it leaves active-only audiences); False if it already was."""
    return bool(Developer.objects.filter(pk=developer.pk, is_active=True).update(is_active=False))
