from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from memo_service.developers.importing import developers_import
from memo_service.developers.importing.cells import COLUMNS
from memo_service.developers.importing.csvfile import ImportFileError


def count_rows(path: Path) -> int:
    with path.open("rb") as f:
        return max(sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1, 0)


class Command(BaseCommand):
    help = (
        f"Upsert developers from a CSV file by external_id. Columns: {', '.join(COLUMNS)} "
        "(others go to attributes). A file with any bad row changes nothing unless "
        "--skip-invalid is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="UTF-8 CSV, comma or semicolon separated")
        parser.add_argument("--skip-invalid", action="store_true", help="apply the good rows, list the bad")
        parser.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")

    def handle(self, *args: Any, file: Path, **options: Any) -> None:
        if not file.is_file():
            raise CommandError(f"no such file: {file}")
        # On a terminal only (tqdm turns itself off otherwise).
        bar = tqdm(total=count_rows(file), unit=" rows", disable=None, file=self.stderr._out)

        def progress(rows: int) -> None:
            if rows % 1000 == 0:
                bar.update(rows - bar.n)

        try:
            with file.open("rb") as stream:
                report = developers_import(
                    stream=stream,
                    skip_invalid=options["skip_invalid"],
                    dry_run=options["dry_run"],
                    progress=progress,
                )
        except ImportFileError as exc:
            raise CommandError(f"{file}: {exc}") from None
        finally:
            bar.close()
        for error in report.errors:
            self.stderr.write(f"{file}: {error}")
        summary = (
            f"{report.rows} rows: {report.created} created, {report.updated} updated, "
            f"{report.unchanged} unchanged, {len(report.errors)} invalid"
        )
        if options["dry_run"]:
            self.stdout.write(f"Dry run, nothing changed. {summary}.")
        elif not report.applied:
            raise CommandError(
                f"Nothing imported: {len(report.errors)} invalid rows (listed above). "
                f"Fix them, or rerun with --skip-invalid to import the {report.rows - len(report.errors)} good ones."
            )
        else:
            self.stdout.write(f"Imported. {summary}.")
