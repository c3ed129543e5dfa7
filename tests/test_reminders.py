"""Reminders go, before the deadline, only to those who have not answered."""

import datetime as dt

import pytest
from django.utils import timezone

from memo_service.memos import reminders
from memo_service.memos.models import Acknowledgement, Delivery, Memo
from memo_service.memos.sending import delivery_send_batch

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(memo, developers):
    """Sent 10 days ago with the default reminders (7 and 1 days before a deadline 8 days out)."""
    Memo.objects.filter(pk=memo.pk).update(
        status="sent", dispatched_at=timezone.now() - dt.timedelta(days=10),
        ack_deadline=timezone.now() + dt.timedelta(days=8),
    )
    for key in ("cn", "ru", "us"):
        Delivery.objects.create(memo=memo, developer=developers[key], status="delivered", country=developers[key].country.code,
                                language=developers[key].language)
    memo.refresh_from_db()
    return memo


def move_deadline(memo, days_from_now):
    Memo.objects.filter(pk=memo.pk).update(ack_deadline=timezone.now() + dt.timedelta(days=days_from_now))


def reminder_ids(memo, sequence):
    return list(Delivery.objects.filter(memo=memo, kind="reminder", sequence=sequence).values_list("id", flat=True))


def test_nothing_is_due_before_the_first_reminder(sent):
    assert reminders.reminders_send_due() == 0


def test_the_first_reminder_goes_to_those_who_have_not_acknowledged(sent, developers, mailgun):
    # A question is no acknowledgement: still reminded. An acknowledgement ends it.
    Acknowledgement.objects.create(memo=sent, developer=developers["cn"], response="needs_help", content_hash="c")
    Acknowledgement.objects.create(memo=sent, developer=developers["us"], response="acknowledged", content_hash="c")
    developers["ru"].email_status = "bounced"
    developers["ru"].save()
    move_deadline(sent, 6)
    assert reminders.reminders_send_due() == 1
    assert reminders.reminders_send_due() == 0  # once
    delivery_send_batch(delivery_ids=reminder_ids(sent, 1))
    [message] = mailgun.accepted
    assert message.first("to") == "Wang Wei <cn-1@example.com>"
    assert message.first("subject").startswith("提醒：")
    assert "您还没有回复这份通知" in message.first("text")
    assert Delivery.objects.get(kind="reminder").status == "sent"


def test_the_built_in_reminder_in_english(sent, developers, mailgun):
    move_deadline(sent, 6)
    reminders.reminders_send_due()
    delivery_send_batch(delivery_ids=reminder_ids(sent, 1))
    ru = next(m for m in mailgun.accepted if "ru-1" in m.first("to"))
    assert ru.first("subject").startswith("Reminder: Access from Russia")
    assert "You have not answered this memo yet" in ru.first("text")


def test_an_interrupted_reminder_is_finished_by_the_next_run(sent, developers, monkeypatch):
    move_deadline(sent, 6)
    real = reminders.memo_remind
    monkeypatch.setattr(reminders, "memo_remind", lambda **kw: (_ for _ in ()).throw(RuntimeError("worker died")))
    with pytest.raises(RuntimeError):
        reminders.reminders_send_due()
    monkeypatch.setattr(reminders, "memo_remind", real)
    assert reminders.reminders_send_due() == 3
    assert len(reminder_ids(sent, 1)) == 3


def test_an_answer_after_the_reminder_was_queued_stops_it(sent, developers, mailgun):
    move_deadline(sent, 6)
    reminders.reminders_send_due()
    Acknowledgement.objects.create(memo=sent, developer=developers["ru"], response="acknowledged", content_hash="c")
    delivery_send_batch(delivery_ids=reminder_ids(sent, 1))
    ru = Delivery.objects.get(kind="reminder", developer=developers["ru"])
    assert (ru.status, ru.last_error) == ("skipped", "not sent: the developer acknowledged first")
    assert {m.first("to") for m in mailgun.accepted} == {"Wang Wei <cn-1@example.com>", "John Smith <us-1@example.com>"}


@pytest.mark.parametrize("backend", ["anymail.backends.mailgun.EmailBackend", "memo_service.backends.mailgun.EmailBackend"])
def test_the_organisation_contacts_copy_of_the_last_reminder_has_no_link_to_answer_as_the_developer(sent, developers, mailgun, settings, backend):
    settings.EMAIL_BACKEND = backend  # one call per email, or the reminders batched in one
    developers["cn"].org_contact_email = "compliance@acme.example"
    developers["cn"].save()
    # A reminder template that prints the link everywhere, the subject included.
    Memo.objects.filter(pk=sent.pk).update(reminders_sent=1, reminder_subject="Answer: {{ ack_url }}",
                                           reminder_text="Answer here: {{ ack_url }}")
    move_deadline(sent, 0.5)
    assert reminders.reminders_send_due() == 3
    delivery_send_batch(delivery_ids=reminder_ids(sent, 2))
    to_contact = [m for m in mailgun.accepted if "compliance@acme.example" in (m.first("to") or "")]
    [copy] = to_contact
    cn = next(m for m in mailgun.accepted if "cn-1" in m.first("to"))
    assert "/ack/" in cn.first("text")  # the developer's own email has their link
    assert all(not m.first("cc") for m in mailgun.accepted)
    everything = "".join(str(value) for values in copy.fields.values() for value in values)
    assert "/ack/" not in everything and "testserver" not in everything
    assert "Regions blocked" in copy.first("subject") and "Wang Wei" in copy.first("subject")
    assert "Only Wang Wei can answer" in copy.first("text") and "Please ask them" in copy.first("text")
    assert not any("delivery_id" in name for name in copy.fields)  # its bounce is not the developer's
    assert Delivery.objects.filter(kind="reminder", sequence=2).count() == 3  # the copy is no delivery
    assert set(Delivery.objects.filter(kind="reminder", sequence=2).values_list("status", flat=True)) == {"sent"}


def test_a_reminder_whose_time_passed_before_the_memo_was_sent_is_not_sent(sent):
    Memo.objects.filter(pk=sent.pk).update(dispatched_at=timezone.now() - dt.timedelta(hours=1))
    move_deadline(sent, 3)  # the 7-day reminder was due before the memo went out
    assert reminders.reminders_send_due() == 0


def test_custom_reminder_templates_replace_the_built_in_one(sent, mailgun):
    Memo.objects.filter(pk=sent.pk).update(reminder_subject="Last call, {{ developer.name }}", reminder_text="Answer please: {{ ack_url }}")
    move_deadline(sent, 6)
    reminders.reminders_send_due()
    delivery_send_batch(delivery_ids=reminder_ids(sent, 1))
    us = next(m for m in mailgun.accepted if "us-1" in m.first("to"))
    assert us.first("subject") == "Last call, John Smith"
    assert us.first("text").startswith("Answer please: http://testserver/ack/")
