from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memo_service.memos.dispatch import DispatchRefused, memo_dispatch, memo_send_start
from memo_service.memos.management.commands._memo_ref import memo_by_ref


class Command(BaseCommand):
    help = (
        "Send a memo: snapshot its audience as deliveries and queue them for the workers. "
        "Rerunning it resumes an interrupted dispatch and never sends anyone twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("memo", help="memo id or slug")

    def handle(self, *args: Any, memo: str, **options: Any) -> None:
        target = memo_by_ref(memo)
        try:
            memo_send_start(memo=target)
            result = memo_dispatch(
                memo_id=target.pk,
                progress=lambda n: self.stderr.write(f"\rqueued {n} deliveries", ending=""),
            )
        except DispatchRefused as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write("")
        self.stdout.write(
            f"{target.slug}: {result.targeted} developers targeted, "
            f"{result.enqueued} deliveries queued for the workers."
        )
