import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memo_service.memos.evidence import checkpoints
from memo_service.memos.evidence.chain import (
    evidence_seal,
    evidence_verify,
    evidence_verify_against,
)
from memo_service.memos.management.commands._memo_ref import memo_by_ref


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
            if problem := evidence_verify_against(target, _load(options["against"])):
                raise CommandError(f"{target.slug}: evidence does NOT extend {options['against']}: {problem}")
            self.stdout.write(f"{target.slug}: the chain still begins with the one in {options['against']}.")
        self.stdout.write(f"{target.slug}: {result.summary()}.")

    def verify_file(self, path: Path) -> None:
        export = _load(path)
        try:
            key, chain, signed = export["public_key"], export["chain"], export["checkpoints"]
        except (KeyError, TypeError):
            raise CommandError(f"{path}: not an evidence export with its chain, checkpoints and public key") from None
        if problem := checkpoints.chain_problem(key, chain, signed):
            raise CommandError(f"{path}: evidence does NOT verify: {problem}")
        self.stdout.write(
            f"{path}: evidence of {export.get('memo')} verifies: {len(chain)} records, chain intact, "
            f"sealed by {len(signed)} signed checkpoints; public key {checkpoints.key_id(key)} "
            "(compare it with the one the operator published)."
        )


def _load(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"{path}: cannot read it as JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CommandError(f"{path}: not an evidence export")
    return document
