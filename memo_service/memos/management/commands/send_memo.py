import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from memo_service.memos.management.commands._memo_ref import memo_by_ref
from memo_service.memos.models import DELIVERY_PENDING, Delivery, Memo
from memo_service.memos.send.control import ControlRefused, memo_cancel, memo_pause, memo_resume
from memo_service.memos.send.dispatch import DispatchRefused, memo_dispatch, memo_send_start
from memo_service.memos.withdrawal import WithdrawalRefused, memo_withdraw

POLL_S = 1.0


class Command(BaseCommand):
    help = (
        "Send an approved memo: snapshot its audience as deliveries and queue them for the "
        "workers. Rerunning it resumes an interrupted dispatch and never sends anyone twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("memo", help="memo id or slug")
        parser.add_argument(
            "--accept-audience-changes", action="store_true", help="send even if the audience changed since approval"
        )
        parser.add_argument("--wait", action="store_true", help="show a progress bar until every delivery is settled")
        control = parser.add_mutually_exclusive_group()
        control.add_argument("--pause", action="store_true", help="pause a memo that is sending")
        control.add_argument("--resume", action="store_true", help="resume a paused memo where it stopped")
        control.add_argument("--cancel", action="store_true", help="cancel the memo: queued emails are not sent")
        control.add_argument(
            "--withdraw",
            action="store_true",
            help="withdraw a memo whose send started: queued emails are not sent, those who received it are told "
            "why (--reason), and its page takes no more answers",
        )
        parser.add_argument("--reason", default="", help="with --withdraw: why, in a sentence the developers read")

    def handle(self, *args: Any, memo: str, **options: Any) -> None:
        target = memo_by_ref(memo)
        if options["withdraw"]:
            return self._withdraw(target, options["reason"])
        if options["reason"]:
            raise CommandError("--reason goes with --withdraw")
        if options["pause"] or options["resume"] or options["cancel"]:
            return self._control(target, options)
        try:
            # This command is the dispatcher (it shows progress), not a worker.
            memo_send_start(
                memo=target, accept_audience_changes=options["accept_audience_changes"], dispatch_in_worker=False
            )
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
        if options["wait"]:
            self._wait(target, result.targeted)

    def _control(self, memo: Memo, options: dict[str, Any]) -> None:
        try:
            if options["pause"]:
                memo_pause(memo=memo, by=None, reason="paused from the command line")
                self.stdout.write(f"{memo.slug}: paused. Resume with send_memo {memo.slug} --resume.")
            elif options["resume"]:
                n = memo_resume(memo=memo, by=None)
                self.stdout.write(f"{memo.slug}: resumed, {n} queued deliveries enqueued again.")
            else:
                n = memo_cancel(memo=memo, by=None)
                self.stdout.write(f"{memo.slug}: cancelled, {n} queued deliveries will not be sent.")
        except ControlRefused as exc:
            raise CommandError(str(exc)) from None

    def _withdraw(self, memo: Memo, reason: str) -> None:
        try:
            done = memo_withdraw(memo=memo, by=None, reason=reason)
        except WithdrawalRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"{memo.slug}: withdrawn, {done.cancelled} queued deliveries will not be sent, "
            f"{done.notified} developers who received it are told."
        )

    def _wait(self, memo: Memo, total: int) -> None:
        initial = Delivery.objects.filter(memo=memo, kind=Delivery.Kind.INITIAL)
        with tqdm(total=total, unit=" emails", file=self.stderr._out) as bar:
            while True:
                done = initial.exclude(status__in=DELIVERY_PENDING).count()
                bar.update(done - bar.n)
                if done >= total:
                    break
                time.sleep(POLL_S)
        failed = initial.filter(status=Delivery.Status.FAILED).count()
        self.stdout.write(f"{memo.slug}: all {total} settled, {failed} failed.")
