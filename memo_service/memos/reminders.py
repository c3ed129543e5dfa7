"""Reminders: before the deadline, to those who have not answered (beat, every minute).

A memo's reminder_days, e.g. [7, 1], are days before its deadline. Reminder n goes out
once its time has come, only if that time is after the memo was sent (a memo sent two
days before its deadline does not get its seven-day reminder at once), to each
developer of the memo who has not acknowledged (a question or a dispute still waiting
is no acknowledgement), whose address has not bounced or complained, who was not
exempted after a dispute and not erased. Each is a Delivery of kind reminder, sequence n,
sent, tracked and exported like the first email. When the last reminder goes out, the
developer's organisation contact (when one is recorded) is told so in a notice of its
own (`contact_copy`), which carries no link: the link answers as the developer, and the
contact may not answer for them, so the notice asks them to have the developer answer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone, translation
from django.utils.translation import gettext

from memo_service.developers.models import Developer
from memo_service.memos.dispatch import PAGE_SIZE, send_batches_enqueue
from memo_service.memos.models import Acknowledgement, Delivery, DisputeResolution, Memo


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
    for memo in Memo.objects.filter(status__in=[Memo.Status.SENDING, Memo.Status.SENT], ack_deadline__gt=now):
        n = reminder_due(memo, now)
        if n > memo.reminders_sent and Memo.objects.filter(
            pk=memo.pk, reminders_sent=memo.reminders_sent
        ).update(reminders_sent=n):
            memo.reminders_sent = n
        if memo.reminders_sent > memo.reminders_dispatched:
            # Creating the deliveries is idempotent: a rerun resumes where it stopped.
            queued += memo_remind(memo=memo, sequence=memo.reminders_sent)
            Memo.objects.filter(pk=memo.pk).update(reminders_dispatched=memo.reminders_sent)
    return queued


def still_to_acknowledge(memo: Memo, developer: OuterRef | int) -> Any:
    """Has this developer not acknowledged the memo, nor been exempted from it?"""
    acknowledged = Acknowledgement.objects.filter(
        memo=memo, developer=developer, response=Acknowledgement.Response.ACKNOWLEDGED
    )
    exempt = DisputeResolution.objects.filter(answer__memo=memo, answer__developer=developer, exempt=True)
    return ~Exists(acknowledged) & ~Exists(exempt)


def _unanswered(memo: Memo) -> Any:
    return (
        Delivery.objects.filter(memo=memo, kind=Delivery.Kind.INITIAL)
        .filter(still_to_acknowledge(memo, OuterRef("developer")))
        .filter(developer__email_status=Developer.EmailStatus.OK, developer__erased_at__isnull=True)
        .order_by("developer_id")
    )


def memo_remind(*, memo: Memo, sequence: int) -> int:
    """Create reminder `sequence`'s deliveries page by page and enqueue them after commit."""
    total = 0
    last_developer = 0
    unanswered = _unanswered(memo)
    reason = f"reminder {sequence}: not acknowledged yet"
    while page := list(
        unanswered.filter(developer_id__gt=last_developer).values_list("developer_id", "language", "country")[:PAGE_SIZE]
    ):
        last_developer = page[-1][0]
        with transaction.atomic():
            Delivery.objects.bulk_create(
                [
                    Delivery(memo=memo, developer_id=dev, kind=Delivery.Kind.REMINDER, sequence=sequence,
                             language=language, country=country, reason=reason)
                    for dev, language, country in page
                ],
                ignore_conflicts=True,
            )
            ids = list(
                Delivery.objects.filter(
                    memo=memo, kind=Delivery.Kind.REMINDER, sequence=sequence, status=Delivery.Status.QUEUED,
                    developer_id__gte=page[0][0], developer_id__lte=last_developer,
                ).order_by("id").values_list("id", flat=True)
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
            "name": name or external_id, "title": memo.title,
        }
        text = gettext(
            "This notice is for your organisation's records.\n\n"
            "%(name)s (account %(external_id)s) has been reminded about “%(title)s” and has not "
            "acknowledged it yet. The deadline is %(deadline)s.\n\n"
            "Only %(name)s can answer, through the personal link in their own email: this notice "
            "carries no link and nobody can answer for them. Please ask them to read the memo "
            "and answer before the deadline.\n"
        ) % {
            "name": name or external_id, "external_id": external_id, "title": memo.title,
            "deadline": f"{memo.ack_deadline:%Y-%m-%d %H:%M} UTC" if memo.ack_deadline else "-",
        }
    return subject, text
