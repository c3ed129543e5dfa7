import sys
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from memo_service.developers.importing.csvfile import ImportFileError
from memo_service.developers.traffic import traffic_import


class Command(BaseCommand):
    help = (
        "Sum observed API traffic into daily rollups per developer and country. CSV with a "
        "header, or JSON lines, gzip accepted, '-' for standard input. Fields: external_id; day "
        "(YYYY-MM-DD) or timestamp (ISO 8601 or Unix seconds); country (ISO alpha-2) or ip "
        "(resolved here, see GEOIP_DATABASE); requests (default 1). Re-importing a day of a "
        "source replaces its counts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the feed's path, or - for standard input")
        parser.add_argument("--source", default="import", help="which feed this is (default: import)")
        parser.add_argument("--all-or-nothing", action="store_true", help="one bad line keeps the whole file out")

    def handle(self, *args: Any, file: str, source: str, all_or_nothing: bool, **options: Any) -> None:
        path = Path(file)
        if file != "-" and not path.is_file():
            raise CommandError(f"no such file: {file}")
        # On a terminal only (tqdm turns itself off otherwise); a count, as a gzipped or
        # piped feed's length is not known before it is read.
        bar = tqdm(unit=" lines", disable=None, file=self.stderr._out, mininterval=0.5)

        def progress(lines: int) -> None:
            if lines % 10_000 == 0:
                bar.update(lines - bar.n)

        try:
            stream: IO[bytes] = sys.stdin.buffer if file == "-" else path.open("rb")
            with stream:
                report = traffic_import(stream=stream, source=source, all_or_nothing=all_or_nothing, progress=progress)
        except (ImportFileError, ValueError) as exc:
            raise CommandError(f"{file}: {exc}") from None
        finally:
            bar.close()
        for error in report.errors:
            self.stderr.write(f"{file}: {error}")
        if report.invalid > len(report.errors):
            self.stderr.write(f"{file}: … and {report.invalid - len(report.errors):,} more invalid lines")
        if not report.applied:
            raise CommandError(
                f"Nothing imported: {report.invalid:,} of {report.lines:,} lines are invalid (listed above). "
                "Fix them, or rerun without --all-or-nothing to import the rest."
            )
        self.stdout.write(
            f"Imported {report.lines - report.invalid:,} of {report.lines:,} lines as {report.rollups:,} daily "
            f"rollups of source {source!r}; {report.invalid:,} invalid."
        )
