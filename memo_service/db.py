"""Database helpers shared by the apps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection, models
from django.db.models.expressions import RawSQL


def statistics_refresh(*tables: type[models.Model]) -> None:
    """After a bulk write (an import, an audience snapshot, a dispatch): PostgreSQL's
    planner otherwise keeps planning with the table as it was until autovacuum gets to
    it, and a join it believes is one row against one row becomes a nested loop over a
    million. ANALYZE reads a sample, so it costs well under a second at any size, and in
    a transaction it sees that transaction's own rows. Other databases: nothing."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for model in tables:
            cursor.execute(f"ANALYZE {model._meta.db_table}")


def in_ids(ids: Sequence[int]) -> Any:
    """For `id__in=`: on PostgreSQL the ids travel as one array. psycopg composes a
    query in Python, placeholder by placeholder, and with a thousand of them that cost
    more than the rest of a send task's claim; one array parameter costs nothing."""
    if connection.vendor != "postgresql":
        return list(ids)
    return RawSQL("SELECT unnest(%s::bigint[])", (list(ids),))


def row_lock(queryset: models.QuerySet[Any]) -> None:
    """Lock the one row of `queryset` until the transaction ends, as FOR NO KEY UPDATE:
    it serializes those who take it without blocking inserts elsewhere whose foreign
    keys point at the row (they take KEY SHARE). SQLite's IMMEDIATE transactions already
    serialize writers: nothing to take there."""
    if connection.features.has_select_for_no_key_update:
        queryset = queryset.select_for_update(no_key=True)
    elif connection.features.has_select_for_update:
        queryset = queryset.select_for_update()
    queryset.values_list("pk", flat=True).get()
