"""Developer accounts out, as CSV that import_developers reads back unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from memo_service.developers.importing.cells import COLUMNS
from memo_service.developers.models import Developer
from memo_service.lib.csv_export import csv_lines

# Rows per query: memory stays flat however many accounts there are.
PAGE = 5_000


def _rows() -> Iterator[list[Any]]:
    last_id = 0
    fields = ["id", *COLUMNS]
    while page := list(Developer.objects.filter(id__gt=last_id).order_by("id").values_list(*fields)[:PAGE]):
        last_id = page[-1][0]
        for _, *values in page:
            row = dict(zip(COLUMNS, values, strict=True))
            row["is_active"] = "true" if row["is_active"] else "false"
            row["last_active_at"] = row["last_active_at"].isoformat() if row["last_active_at"] else ""
            row["attributes"] = json.dumps(row["attributes"], ensure_ascii=False) if row["attributes"] else ""
            yield [row[c] for c in COLUMNS]


def developers_csv() -> Iterator[str]:
    return csv_lines(list(COLUMNS), _rows())
