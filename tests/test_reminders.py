"""Reminders go, before the deadline, only to those who have not answered."""

import datetime as dt

import pytest
from django.utils import timezone

from memo_service.memos import reminders
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import add_region, answered, approve, sent_memo, tracking_event

pytestmark = pytest.mark.django_db


def send(memo, developers, *, more=(), days_ago=10, deadline_in=8, **draft):
    """Sent `days_ago` days ago to CN, RU and US (and `more`), each email delivered, with
    the default reminders (7 and 1 days before a deadline `deadline_in` days from now);
    `draft`: the memo's reminder templates, as its composer wrote them before approval."""
    deadline = timezone.now() + dt.timedelta(days=deadline_in)
    Memo.objects.filter(pk=memo.pk).update(ack_deadline=deadline, **draft)
    memo.refresh_from_db()
    add_region(memo, "US")
    delivered = {developer: "delivered" for developer in (developers["cn"], developers["ru"], developers["us"], *more)}
    return sent_memo(memo, delivered, at=timezone.now() - dt.timedelta(days=days_ago))


@pytest.fixture
def sent(memo, developers):
    return send(memo, developers)


def move_deadline(clock, memo, days_from_now):
    """Days pass: the deadline is that close."""
    clock.move_to(memo.ack_deadline - dt.timedelta(days=days_from_now))


def reminder_ids(memo, sequence):
    return list(Delivery.objects.filter(memo=memo, kind="reminder", sequence=sequence).values_list("id", flat=True))


def test_nothing_is_due_before_the_first_reminder(sent):
    assert reminders.reminders_send_due() == 0


def test_the_first_reminder_goes_to_those_who_have_not_answered(sent, developers, mailgun, clock):
    # An acknowledgement ends it; so does a bounced address.
    answered(sent, developers["us"])
    tracking_event(Delivery.objects.get(memo=sent, developer=developers["ru"]), "bounced")  # after all
    move_deadline(clock, sent, 6)
    assert reminders.reminders_send_due() == 1
    assert reminders.reminders_send_due() == 0  # once
    delivery_send_batch(delivery_ids=reminder_ids(sent, 1))
    [message] = mailgun.accepted
    assert message.first("to") == "Wang Wei <cn-1@example.com>"
    assert message.first("subject").startswith("提醒：")
    assert "您还没有回复这份通知" in message.first("text")
    assert Delivery.objects.get(kind="reminder").status == "sent"


def test_the_built_in_reminder_in_english(sent, developers, mailgun, clock):
    move_deadline(clock, sent, 6)
    reminders.reminders_send_due()
    delivery_send_batch(delivery_ids=reminder_ids(sent, 1))
    ru = next(m for m in mailgun.accepted if "ru-1" in m.first("to"))
    assert ru.first("subject").startswith("Reminder: Access from Russia")
    assert "You have not answered this memo yet" in ru.first("text")


def test_an_interrupted_reminder_is_finished_by_the_next_run(sent, developers, monkeypatch, clock):
    move_deadline(clock, sent, 6)
    real = reminders.memo_remind
    monkeypatch.setattr(reminders, "memo_remind", lambda **kw: (_ for _ in ()).throw(RuntimeError("worker died")))
    with pytest.raises(RuntimeError):
        reminders.reminders_send_due()
    monkeypatch.setattr(reminders, "memo_remind", real)
    assert reminders.reminders_send_due() == 3
    assert len(reminder_ids(sent, 1)) == 3


def test_an_answer_after_the_reminder_was_queued_stops_it(sent, developers, mailgun, clock):
    move_deadline(clock, sent, 6)
    reminders.reminders_send_due()
    answered(sent, developers["ru"])
    delivery_send_batch(delivery_ids=reminder_ids(sent, 1))
    ru = Delivery.objects.get(kind="reminder", developer=developers["ru"])
    assert (ru.status, ru.status_reason) == ("skipped", "not sent: the developer answered first")
    assert {m.first("to") for m in mailgun.accepted} == {"Wang Wei <cn-1@example.com>", "John Smith <us-1@example.com>"}


@pytest.mark.parametrize(
    "backend", ["anymail.backends.mailgun.EmailBackend", "memo_service.backends.mailgun.EmailBackend"]
)
def test_the_organisation_contacts_copy_of_the_last_reminder_has_no_link_to_answer_as_the_developer(
    memo, developers, mailgun, settings, backend, clock
):
    developers["cn"].org_contact_email = "compliance@acme.example"
    developers["cn"].save()
    # A reminder template that prints the link everywhere, the subject included.
    sent = send(memo, developers, reminder_subject="Answer: {{ ack_url }}", reminder_text="Answer here: {{ ack_url }}")
    move_deadline(clock, sent, 6)
    assert reminders.reminders_send_due() == 3  # the first reminder, queued (not sent here)
    move_deadline(clock, sent, 0.5)
    settings.EMAIL_BACKEND = backend  # one call per email, or the reminders batched in one
    assert reminders.reminders_send_due() == 3
    memo_emails = len(mailgun.accepted)
    delivery_send_batch(delivery_ids=reminder_ids(sent, 2))
    last_reminders = mailgun.accepted[memo_emails:]
    to_contact = [m for m in last_reminders if "compliance@acme.example" in (m.first("to") or "")]
    [copy] = to_contact
    cn = next(m for m in last_reminders if "cn-1" in m.first("to"))
    assert "/ack/" in cn.first("text")  # the developer's own email has their link
    assert all(not m.first("cc") for m in last_reminders)
    everything = "".join(str(value) for values in copy.fields.values() for value in values)
    assert "/ack/" not in everything and "testserver" not in everything
    assert "Regions blocked" in copy.first("subject") and "Wang Wei" in copy.first("subject")
    assert "Only Wang Wei can answer" in copy.first("text") and "Please ask them" in copy.first("text")
    assert not any("delivery_id" in name for name in copy.fields)  # its bounce is not the developer's
    assert Delivery.objects.filter(kind="reminder", sequence=2).count() == 3  # the copy is no delivery
    assert set(Delivery.objects.filter(kind="reminder", sequence=2).values_list("status", flat=True)) == {"sent"}


def test_a_reminder_whose_time_passed_before_the_memo_was_sent_is_not_sent(memo, developers):
    send(memo, developers, days_ago=1 / 24, deadline_in=3)  # the 7-day reminder was due before it went out
    assert reminders.reminders_send_due() == 0


def test_custom_reminder_templates_replace_the_built_in_one(memo, developers, mailgun, clock):
    sent = send(
        memo,
        developers,
        reminder_subject="Last call, {{ developer.name }}",
        reminder_text="Answer please: {{ ack_url }}",
    )
    move_deadline(clock, sent, 6)
    reminders.reminders_send_due()
    memo_emails = len(mailgun.accepted)
    delivery_send_batch(delivery_ids=reminder_ids(sent, 1))
    us = next(m for m in mailgun.accepted[memo_emails:] if "us-1" in m.first("to"))
    assert us.first("subject") == "Last call, John Smith"
    assert us.first("text").startswith("Answer please: http://testserver/ack/")


def test_who_is_reminded_after_asking_for_help_or_disputing(memo, developers, admin_user, clock):
    """ "You have not answered" is for those with no answer, and those whose dispute was
    decided "region confirmed"; a question or an open or corrected dispute waits for us."""
    from memo_service.memos.answer.disputes import dispute_resolve
    from tests.conftest import make_developer

    more = {key: make_developer(f"{key}-1", "CN") for key in ("open", "confirmed", "corrected")}
    sent = send(memo, developers, more=more.values())
    answered(sent, developers["cn"], "needs_help", comment="Which regions?")
    for key, developer in more.items():
        answer = answered(sent, developer, "disputes_region", country="RU")
        if key != "open":
            dispute_resolve(answer=answer, outcome=key, by=admin_user, note="Checked")
    assert {d.developer.external_id for d in reminders.memo_awaiting_answer(sent)} == {"ru-1", "us-1", "confirmed-1"}
    move_deadline(clock, sent, 6)
    assert reminders.reminders_send_due() == 3
    assert set(Delivery.objects.filter(kind="reminder").values_list("developer__external_id", flat=True)) == {
        "ru-1",
        "us-1",
        "confirmed-1",
    }


def test_a_composer_sends_a_reminder_now_from_the_dashboard(sent, developers, mailgun, admin_client, clock):
    from django.urls import reverse

    from memo_service.memos.models import AuditEvent

    answered(sent, developers["us"])
    dashboard = reverse("admin:memos_memo_dashboard", args=[sent.pk])
    assert 'id="remind-now"' in admin_client.get(dashboard).content.decode()
    admin_client.post(reverse("admin:memos_memo_remind", args=[sent.pk]))
    admin_client.post(reverse("admin:memos_memo_remind", args=[sent.pk]))  # pressed again later: a second one
    sequences = sorted(Delivery.objects.filter(kind="reminder").values_list("developer__external_id", "sequence"))
    assert sequences == [("cn-1", 1001), ("cn-1", 1002), ("ru-1", 1001), ("ru-1", 1002)]
    assert AuditEvent.objects.filter(action="memo.reminded").count() == 2
    # The schedule's own reminders still go out, under their own numbers.
    move_deadline(clock, sent, 6)
    assert reminders.reminders_send_due() == 2 and len(reminder_ids(sent, 1)) == 2
    delivery_send_batch(delivery_ids=reminder_ids(sent, 1001))
    assert {m.first("to") for m in mailgun.accepted} == {
        "Wang Wei <cn-1@example.com>",
        "Olga Petrova <ru-1@example.com>",
    }


def test_a_reminder_now_is_refused_before_the_send_and_after_the_deadline(memo, developers, admin_user, clock):
    approve(memo)
    with pytest.raises(reminders.RemindRefused, match="only a memo sent"):
        reminders.memo_remind_now(memo=Memo.objects.get(pk=memo.pk), by=admin_user)
    sent_memo(memo)
    clock.move_to(memo.ack_deadline + dt.timedelta(hours=1))
    with pytest.raises(reminders.RemindRefused, match="deadline"):
        reminders.memo_remind_now(memo=Memo.objects.get(pk=memo.pk), by=admin_user)
    assert not Delivery.objects.filter(kind="reminder").exists()
