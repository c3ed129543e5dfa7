from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memo_service.memos.evidence.export import evidence_csv, evidence_json
from memo_service.memos.evidence.sequencer import evidence_seal
from memo_service.memos.evidence.verify import evidence_verify_published
from memo_service.memos.management.commands._memo_ref import memo_by_ref


class Command(BaseCommand):
    help = (
        "Write a memo's evidence to standard output, one record per recipient with their final standing "
        "(CSV or JSON); the JSON also carries the approval, the cases, the withdrawal, the hash chain, its "
        "signed checkpoints and the public key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("memo", help="memo id or slug")
        parser.add_argument("--format", choices=["csv", "json"], default="csv")

    def handle(self, *args: Any, memo: str, **options: Any) -> None:
        target = memo_by_ref(memo)
        evidence_seal(memo_id=target.pk)  # the export carries the chain up to now, sealed
        if options["format"] == "json" and not (result := evidence_verify_published(target)).ok:
            # An evidence file is what an auditor trusts: never one of evidence that does not verify.
            raise CommandError(f"{target.slug}: not exported: {result.summary()}")
        lines = evidence_csv(target) if options["format"] == "csv" else evidence_json(target)
        for line in lines:
            self.stdout.write(line, ending="")
