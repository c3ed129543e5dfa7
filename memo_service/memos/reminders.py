"""Reminders: before the deadline, to those who have not answered (beat, every minute).

A memo's reminder_days, e.g. [7, 1], are days before its deadline. Reminder n goes out
once its time has come, only if that time is after the memo was sent (a memo sent two
days before its deadline does not get its seven-day reminder at once), to each
developer of the memo who still has to answer (still_to_answer: no answer at all, or
only a "my region is wrong" that an admin decided "region confirmed"), whose address
has not bounced or complained and who was not erased. Someone who asked for help, or
whose dispute is open or was corrected, is waiting for us, not we for them. Each is a
Delivery of kind reminder, sequence n, sent, tracked and exported like the first email.
When the last reminder goes out, the developer's organisation contact (when one is
recorded) is told so in a notice of its own (`contact_copy`), which carries no link: the
link answers as the developer, and the contact may not answer for them, so the notice
asks them to have the developer answer. A withdrawn memo has no reminders (only a memo in
MEMO_MAY_SEND has), and neither has one whose correction started sending (`corrected`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.db.models import Exists, Max, OuterRef
from django.utils import timezone, translation
from django.utils.translation import gettext

from memo_service.developers.models import Developer
from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.models import MEMO_MAY_SEND, MEMO_SHOWN, Answer, Delivery, DisputeResolution, Memo
from memo_service.memos.send.dispatch import PAGE_SIZE, send_batches_enqueue


def reminder_due(memo: Memo, now: dt.datetime) -> int:
    """The number of the latest reminder whose time has come (0: none yet)."""
    if memo.ack_deadline is None or memo.dispatched_at is None or now >= memo.ack_deadline:
        return 0
    due = 0
    for n, days in enumerate(sorted((int(d) for d in memo.reminder_days or []), reverse=True), start=1):
        at = memo.ack_deadline - dt.timedelta(days=days)
        if memo.dispatched_at <= at <= now:
            due = n
    return due


def reminders_send_due() -> int:
    """Dispatch every reminder that is due, and finish one a crash interrupted; returns
    how many reminder emails were queued."""
    now = timezone.now()
    queued = 0
    for memo in Memo.objects.filter(status__in=MEMO_MAY_SEND, ack_deadline__gt=now).exclude(corrected()):
        n = reminder_due(memo, now)
        if n > memo.reminders_sent and Memo.objects.filter(pk=memo.pk, reminders_sent=memo.reminders_sent).update(
            reminders_sent=n
        ):
            memo.reminders_sent = n
        if memo.reminders_sent > memo.reminders_dispatched:
            # Creating the deliveries is idempotent: a rerun resumes where it stopped.
            queued += memo_remind(memo=memo, sequence=memo.reminders_sent)
            Memo.objects.filter(pk=memo.pk).update(reminders_dispatched=memo.reminders_sent)
    return queued


def corrected() -> Exists:
    """A memo whose correction started sending: the correction asks for the answers now,
    and the earlier memo sends no more reminders."""
    return Exists(Memo.objects.filter(supersedes=OuterRef("pk"), status__in=MEMO_SHOWN))


def still_to_answer(memo: Memo, developer: OuterRef | int) -> Any:
    """Does this developer still owe the memo an answer? Yes with no answer at all, or
    when their only answer is a dispute decided "confirmed" (the memo does apply to them).
    An acknowledgement, a request for help, an open, corrected or exempted dispute, or
    one carried from the memo this one corrects and exempted on its case here: no."""
    answered = Answer.objects.filter(memo=memo, developer=developer).exclude(
        response__in=(Answer.Response.DISPUTES_REGION, Answer.Response.DISPUTES_TRAFFIC),
        resolution__outcome=DisputeResolution.Outcome.CONFIRMED,
    )
    return ~Exists(answered) & ~Exists(exempted_on_case(memo, developer))


def exempted_on_case(memo: Memo, developer: OuterRef | int) -> Any:
    """The exempting decisions of the developer's disputes carried to `memo` (a
    correction) and decided on its case: the answer is the earlier memo's, the
    exemption this memo's."""
    return DisputeResolution.objects.filter(answer__cases__memo=memo, answer__developer=developer, exempt=True)


def not_acknowledged(memo: Memo, developer: OuterRef | int) -> Any:
    """Has this developer not acknowledged the memo, and not been exempted from it (a
    dispute corrected to a country outside its audience, or exempted, here or on its case
    carried here)? The deadline's rule (the platform hears of them when it passes), stricter than still_to_answer's: a request for help or an open
    dispute is an answer, not an acknowledgement."""
    acknowledged = Answer.objects.filter(memo=memo, developer=developer, response=Answer.Response.ACKNOWLEDGED)
    exempt = DisputeResolution.objects.filter(answer__memo=memo, answer__developer=developer, exempt=True)
    return ~Exists(acknowledged) & ~Exists(exempt) & ~Exists(exempted_on_case(memo, developer))


def memo_awaiting_answer(memo: Memo) -> Any:
    """The initial deliveries of those who still have to answer (reminders, dashboard)."""
    return (
        Delivery.objects.filter(memo=memo, kind=Delivery.Kind.INITIAL)
        .filter(still_to_answer(memo, OuterRef("developer")))
        .order_by("developer_id")
    )


def _unanswered(memo: Memo) -> Any:
    """Those a reminder goes to: still to answer, and reachable."""
    return memo_awaiting_answer(memo).filter(
        developer__email_status=Developer.EmailStatus.OK, developer__erased_at__isnull=True
    )


# Reminders sent on request ("send a reminder now") are numbered from here: the schedule's
# are 1 to len(reminder_days), at most 365 (one per day before the deadline), so the two
# never share a number and neither stops the other.
ON_REQUEST_FIRST = 1000


class RemindRefused(Exception):
    pass


def memo_remind_now(*, memo: Memo, by: Actor) -> int:
    """A reminder now, outside the schedule, to those who still have to answer (a
    Composer's button on the dashboard); returns how many emails were queued."""
    now = timezone.now()
    if memo.status not in MEMO_MAY_SEND or memo.dispatched_at is None:
        raise RemindRefused(f"“{memo.title}” is {memo.get_status_display()}: only a memo sent in full has reminders.")
    if Memo.objects.filter(pk=memo.pk).filter(corrected()).exists():
        raise RemindRefused(f"“{memo.title}” has a correction that is being sent: its developers answer that one.")
    if memo.ack_deadline is not None and now >= memo.ack_deadline:
        raise RemindRefused(f"The deadline of “{memo.title}” has passed: no more reminders.")
    last = (
        Delivery.objects.filter(memo=memo, kind=Delivery.Kind.REMINDER, sequence__gt=ON_REQUEST_FIRST).aggregate(
            n=Max("sequence")
        )["n"]
        or ON_REQUEST_FIRST
    )
    queued = memo_remind(memo=memo, sequence=last + 1)
    audit_record(actor=by, action="memo.reminded", obj=memo, sequence=last + 1, queued=queued)
    return queued


def memo_remind(*, memo: Memo, sequence: int) -> int:
    """Create reminder `sequence`'s deliveries page by page and enqueue them after commit."""
    total = 0
    last_developer = 0
    unanswered = _unanswered(memo)
    reason = f"reminder {sequence}: not answered yet"
    while page := list(
        unanswered.filter(developer_id__gt=last_developer).values_list("developer_id", "language", "country")[
            :PAGE_SIZE
        ]
    ):
        last_developer = page[-1][0]
        with transaction.atomic():
            Delivery.objects.bulk_create(
                [
                    Delivery(
                        memo=memo,
                        developer_id=dev,
                        kind=Delivery.Kind.REMINDER,
                        sequence=sequence,
                        language=language,
                        country=country,
                        reason=reason,
                    )
                    for dev, language, country in page
                ],
                ignore_conflicts=True,
            )
            ids = list(
                Delivery.objects.filter(
                    memo=memo,
                    kind=Delivery.Kind.REMINDER,
                    sequence=sequence,
                    status=Delivery.Status.QUEUED,
                    developer_id__gte=page[0][0],
                    developer_id__lte=last_developer,
                )
                .order_by("id")
                .values_list("id", flat=True)
            )
            send_batches_enqueue(ids)
        total += len(ids)
    return total


def contact_copy(*, memo: Memo, name: str, external_id: str, language: str) -> tuple[str, str]:
    """The subject and text telling an organisation's contact that one of its developers
    got the memo's last reminder. Nothing of the admin's templates is in it (they may print
    the link anywhere, in any form): our own words, the memo's title and its deadline."""
    with translation.override(language):
        subject = gettext("For your records: %(name)s was reminded about “%(title)s”") % {
            "name": name or external_id,
            "title": memo.title,
        }
        text = gettext(
            "This notice is for your organisation's records.\n\n"
            "%(name)s (account %(external_id)s) has been reminded about “%(title)s” and has not "
            "acknowledged it yet. The deadline is %(deadline)s.\n\n"
            "Only %(name)s can answer, through the personal link in their own email: this notice "
            "carries no link and nobody can answer for them. Please ask them to read the memo "
            "and answer before the deadline.\n"
        ) % {
            "name": name or external_id,
            "external_id": external_id,
            "title": memo.title,
            "deadline": f"{memo.ack_deadline:%Y-%m-%d %H:%M} UTC" if memo.ack_deadline else "-",
        }
    return subject, text
