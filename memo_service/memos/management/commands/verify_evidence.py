from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from memo_service.memos.evidence.export_file import ExportError, members
from memo_service.memos.evidence.sequencer import evidence_seal
from memo_service.memos.evidence.verify import evidence_verify, evidence_verify_against, published_heads
from memo_service.memos.evidence.verify_file import Unreadable, export_problem
from memo_service.memos.management.commands._memo_ref import memo_by_ref
from memo_service.memos.models import Memo


class Command(BaseCommand):
    help = (
        "Verify a memo's evidence: the hash chain, every signed checkpoint, the rows it proves. "
        "--file verifies an export alone (no database); --against checks that the database's chain "
        "still begins with the chain an earlier export recorded."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("memo", nargs="?", help="memo id or slug")
        parser.add_argument(
            "--file", type=Path, help="an export_evidence --format json file, verified with no database"
        )
        parser.add_argument("--against", type=Path, help="an earlier export of the same memo")
        parser.add_argument(
            "--heads",
            type=Path,
            help="a copy of the published checkpoint heads (default: EVIDENCE_HEADS_PATH, when it exists)",
        )
        parser.add_argument(
            "--no-seal",
            action="store_true",
            help="report records not yet chained as pending instead of chaining them first",
        )

    def handle(self, *args: Any, memo: str | None, **options: Any) -> None:
        if options["file"]:
            if memo or options["against"]:
                raise CommandError("--file verifies an export alone: give no MEMO and no --against")
            self.verify_file(options["file"], options["heads"])
            return
        if not memo:
            raise CommandError("give a MEMO (id or slug), or --file EXPORT.json")
        target = memo_by_ref(memo)
        if not options["no_seal"]:
            evidence_seal(memo_id=target.pk)
        try:
            published = published_heads(target.pk, options["heads"])
        except OSError as exc:
            raise CommandError(f"{options['heads'] or settings.EVIDENCE_HEADS_PATH}: cannot read it: {exc}") from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        result = evidence_verify(target, published)
        if not result.ok:
            raise CommandError(f"{target.slug}: {result.summary()}")
        if options["against"]:
            if problem := self.against(target, options["against"]):
                raise CommandError(f"{target.slug}: evidence does NOT extend {options['against']}: {problem}")
            self.stdout.write(f"{target.slug}: the chain still begins with the one in {options['against']}.")
        self.stdout.write(f"{target.slug}: {result.summary()}.")

    def verify_file(self, path: Path, heads_path: Path | None) -> None:
        """What `python -m memo_service.memos.evidence.verify_file` does, which needs no settings."""
        try:
            problem, summary = export_problem(path, heads_path)
        except Unreadable as exc:
            raise CommandError(str(exc)) from None
        if problem:
            raise CommandError(f"{path}: evidence does NOT verify: {problem}")
        self.stdout.write(f"{path}: {summary}.")

    def against(self, target: Memo, path: Path) -> str:
        exported_memo = None
        with _export(path) as f:
            try:
                for key, value in members(f):
                    if key == "memo":
                        exported_memo = value
                    elif key == "chain":
                        return evidence_verify_against(target, exported_memo, value)
            except (KeyError, TypeError, ValueError) as exc:
                raise CommandError(f"{path}: not a well-formed evidence export ({type(exc).__name__}: {exc})") from None
        raise CommandError(f"{path}: not an evidence export: it holds no chain")


@contextmanager
def _export(path: Path) -> Iterator[IO[str]]:
    try:
        with path.open(encoding="utf-8") as f:
            yield f
    except OSError as exc:
        raise CommandError(f"{path}: cannot read it: {exc}") from None
    except (ExportError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read it as JSON: {exc}") from None
