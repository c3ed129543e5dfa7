"""Many cleaned rows into the developers table: the ORM on SQLite, COPY into a temporary
table and one INSERT … ON CONFLICT on PostgreSQL."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import connection

from memo_service.developers.models import Developer
from memo_service.lib.db import statistics_refresh

# Rows per ORM upsert (SQLite): one SELECT and one INSERT … ON CONFLICT per chunk;
# 2,000 rows keep each statement well under SQLite's parameter limit.
CHUNK = 2_000


def developers_upsert(rows: Iterable[dict[str, Any]]) -> tuple[int, int, int]:
    """Insert new accounts and update changed ones, by external_id; identical rows are
    left alone, and so are erased accounts (an import never brings their data back);
    attributes are merged into those stored. All rows must carry the same keys.
    Returns (created, updated, unchanged).

    Rows are streamed: on PostgreSQL through COPY into a temporary table and one
    INSERT … ON CONFLICT (memory flat); elsewhere in chunks
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


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
