"""Developer accounts in: clean one row, upsert many, read a CSV file.

The CSV import and the sync API share `developer_clean` and `developers_upsert`, so a
row means the same thing whichever way it arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from django.db import transaction

from memo_service.developers.importing.cells import developer_clean, text_cell
from memo_service.developers.importing.csvfile import read_csv
from memo_service.developers.importing.upsert import developers_upsert


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
        external_id = text_cell(raw.get("external_id"))
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
    external_id = text_cell(raw.get("external_id"))
    values, errors = developer_clean(raw)
    if external_id in seen:
        errors.append(f"duplicate external_id: it appears earlier in {source}")
    if errors:
        report.errors.append(RowError(where, external_id, "; ".join(errors)))
        return None
    seen.add(external_id)
    return values


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
