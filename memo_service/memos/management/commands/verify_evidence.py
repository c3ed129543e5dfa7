from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memo_service.memos.evidence import evidence_verify
from memo_service.memos.management.commands._memo_ref import memo_by_ref


class Command(BaseCommand):
    help = "Recompute a memo's evidence chain; names the first record that does not verify."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("memo", help="memo id or slug")

    def handle(self, *args: Any, memo: str, **options: Any) -> None:
        target = memo_by_ref(memo)
        result = evidence_verify(target)
        if not result.ok:
            raise CommandError(f"{target.slug}: evidence does NOT verify: {result.problem} ({result.records} records verified before it)")
        self.stdout.write(f"{target.slug}: evidence verifies: {result.records} records, chain intact.")
