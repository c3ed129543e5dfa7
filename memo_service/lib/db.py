"""Database helpers shared by the apps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connection, models, transaction
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
    query in Python, placeholder by placeholder, and with a thousand of them that costs
    more than the rest of a send task's claim; one array parameter costs nothing."""
    if connection.vendor != "postgresql":
        return list(ids)
    return RawSQL("SELECT unnest(%s::bigint[])", (list(ids),))


def row_lock(queryset: models.QuerySet[Any], wait: bool = True) -> bool:
    """Lock the one row of `queryset` until the transaction ends, as FOR NO KEY UPDATE:
    it serializes those who take it without blocking inserts elsewhere whose foreign
    keys point at the row (they take KEY SHARE). With wait=False, False at once when
    another transaction holds it. SQLite's IMMEDIATE transactions already serialize
    writers: nothing to take there."""
    if connection.features.has_select_for_no_key_update:
        locking = queryset.select_for_update(no_key=True, skip_locked=not wait)
    elif connection.features.has_select_for_update:
        locking = queryset.select_for_update(skip_locked=not wait)
    else:
        locking = queryset
    if locking.values_list("pk", flat=True).first() is not None:
        return True
    queryset.values_list("pk", flat=True).get()  # there is no such row: DoesNotExist, as with wait
    return False


@contextmanager
def snapshot() -> Iterator[None]:
    """Read as of one moment: a transaction that on PostgreSQL is REPEATABLE READ, so a
    long read (verifying or exporting a chain of millions of records while webhooks and
    the sequencer keep writing) sees no row that committed after it began. SQLite's read
    transaction is such a snapshot already. Inside a transaction already begun (the
    tests') it can only join it."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # the transaction's first statement
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield
