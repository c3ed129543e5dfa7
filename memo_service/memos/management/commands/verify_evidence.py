import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memo_service.memos.evidence import checkpoints
from memo_service.memos.evidence.chain import (
    evidence_seal,
    evidence_verify,
    evidence_verify_against,
)
from memo_service.memos.evidence.export_file import ExportError, members
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
            "--no-seal",
            action="store_true",
            help="report records not yet chained as pending instead of chaining them first",
        )

    def handle(self, *args: Any, memo: str | None, **options: Any) -> None:
        if options["file"]:
            if memo or options["against"]:
                raise CommandError("--file verifies an export alone: give no MEMO and no --against")
            self.verify_file(options["file"])
            return
        if not memo:
            raise CommandError("give a MEMO (id or slug), or --file EXPORT.json")
        target = memo_by_ref(memo)
        if not options["no_seal"]:
            evidence_seal(memo_id=target.pk)
        result = evidence_verify(target)
        if not result.ok:
            raise CommandError(f"{target.slug}: {result.summary()}")
        if options["against"]:
            if problem := self.against(target, options["against"]):
                raise CommandError(f"{target.slug}: evidence does NOT extend {options['against']}: {problem}")
            self.stdout.write(f"{target.slug}: the chain still begins with the one in {options['against']}.")
        self.stdout.write(f"{target.slug}: {result.summary()}.")

    def verify_file(self, path: Path) -> None:
        """One pass over the file: an export lists its checkpoints and keys before its
        chain, so each record is checked as it is read and none is kept. (An export
        written before that order is read whole.)"""
        known: dict[str, Any] = {}
        outcome: tuple[str, int] | None = None
        with _export(path) as f:
            try:
                for key, value in members(f):
                    if key == "chain" and {"checkpoints", "public_keys"} <= known.keys():
                        outcome = checkpoints.chain_problem(_keys(known), value, known["checkpoints"])
                    elif key == "chain":  # an export from before: its checkpoints come after the chain
                        known["chain"] = list(value)
                    elif key != "recipients":
                        known[key] = value
                if outcome is None:
                    outcome = checkpoints.chain_problem(_keys(known), known["chain"], known["checkpoints"])
            except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
                raise CommandError(
                    f"{path}: not a well-formed evidence export with its chain, checkpoints and public key "
                    f"({type(exc).__name__}: {exc})"
                ) from None
        problem, records = outcome
        if problem:
            raise CommandError(f"{path}: evidence does NOT verify: {problem}")
        public = list(_keys(known).values())
        self.stdout.write(
            f"{path}: evidence of {known.get('memo')} verifies: {records} records, chain intact, "
            f"sealed by {len(known['checkpoints'])} signed checkpoints; "
            f"public key{'s' if len(public) > 1 else ''} {', '.join(checkpoints.key_id(k) for k in public)} "
            "(compare with the ones the operator published)."
        )

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


def _keys(known: dict[str, Any]) -> dict[str, str]:
    """The keys that signed the export's checkpoints; an export made before keys could
    be rotated carries only the one."""
    return checkpoints.keyring(known.get("public_keys") or [known["public_key"]])


@contextmanager
def _export(path: Path) -> Iterator[IO[str]]:
    try:
        with path.open(encoding="utf-8") as f:
            yield f
    except OSError as exc:
        raise CommandError(f"{path}: cannot read it: {exc}") from None
    except (ExportError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read it as JSON: {exc}") from None
