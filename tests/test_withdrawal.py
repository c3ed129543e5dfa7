"""Withdrawing a memo whose send started: the send stops for good, those who received it
are told why in their language, the evidence records it, reminders stop; from the memo
page (a confirmation that asks why), and from `send_memo --withdraw`."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import io
import threading
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos import withdrawal
from memo_service.memos.answer.answers import AnswerInvalid
from memo_service.memos.delivery_status import (
    deliveries_claim,
    deliveries_record_sent,
    deliveries_record_unknown,
    deliveries_record_unsent,
)
from memo_service.memos.models import Answer, AuditEvent, Delivery, EvidenceRecord, Memo, Notification
from memo_service.memos.notify.notifications import notification_hash
from memo_service.memos.reminders import RemindRefused, memo_remind_now, reminders_send_due
from memo_service.memos.send.control import memo_pause
from memo_service.memos.send.dispatch import memo_dispatch, memo_send_start
from memo_service.memos.send.sending import delivery_send_batch
from memo_service.memos.send.sweeper import deliveries_sweep
from memo_service.memos.withdrawal import WithdrawalRefused, memo_withdraw, withdrawal_notify
from tests.conftest import (
    Provider,
    answered,
    approve,
    dispatched,
    make_developer,
    make_memo,
    memo_in,
    sent_memo,
    wait_for,
)

# Committed transactions (the notices go after commit); the roles' groups kept.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
REASON = "The date in it was wrong & a corrected notice follows."


def staff(username: str, group: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", f"pw-{username}-123", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def client_of(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def notices() -> dict[str, Notification]:
    rows = Notification.objects.filter(kind=Notification.Kind.WITHDRAWAL).select_related("developer")
    return {n.developer.external_id: n for n in rows if n.developer is not None}


def test_a_sent_memo_withdrawn_tells_exactly_those_who_received_it_in_their_language(
    memo: Memo, developers: dict[str, Developer], later: list[Any], eager: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(withdrawal, "NOTICE_PAGE", 2)  # three recipients: two pages
    failed = make_developer("ru-failed", "RU")
    bounced = make_developer("cn-bounced", "CN")
    sent_memo(memo, {developers["cn"]: "delivered", failed: "failed", bounced: "bounced"})
    answered(memo, developers["cn"])
    mail.outbox.clear()
    carol = staff("carol", "Composer")

    done = memo_withdraw(memo=memo, by=carol, reason=f"  {REASON}  ")

    memo.refresh_from_db()
    assert memo.status == Memo.Status.WITHDRAWN and memo.withdrawn_by == carol and memo.withdrawn_at
    assert memo.withdrawal_reason == REASON
    # Handed over (delivered, sent, bounced) are told; the failed one never got it.
    assert sorted(notices()) == ["cn-1", "cn-bounced", "ru-1"] and done.notified == 3 and done.cancelled == 0
    by_address = {m.to[0]: m for m in mail.outbox}
    assert set(by_address) == {"cn-1@example.com", "cn-bounced@example.com", "ru-1@example.com"}
    english = by_address["ru-1@example.com"]
    # The memo's subject names each developer's country: one notice per language names it by its date.
    sent_on = f"{memo.send_started_at:%Y-%m-%d}"
    assert english.subject == f"Withdrawn: our notice of {sent_on}" and memo.title not in english.body
    assert f"The notice that we sent you on {sent_on} has been withdrawn" in english.body
    assert REASON in english.body  # as written: plain text, no HTML escaping
    chinese = by_address["cn-1@example.com"]
    assert (
        chinese.subject == f"已撤回：我们于 {sent_on} 发送的通知"
        and "已被撤回" in chinese.body
        and REASON in chinese.body
    )
    # The evidence: who, why, and the notice's text hash in each language.
    record = EvidenceRecord.objects.get(memo=memo, kind=EvidenceRecord.Kind.WITHDRAWAL)
    cn, ru = notices()["cn-1"], notices()["ru-1"]
    assert record.payload["reason"] == REASON and record.payload["by"] == carol.pk and record.payload["notified"] == 3
    assert record.payload["notice_hashes"] == {"zh-hans": cn.text_hash, "en": ru.text_hash}
    assert cn.text_hash == notification_hash(str(chinese.subject), str(chinese.body))
    assert AuditEvent.objects.filter(action="memo.withdrawn", actor=carol, object_id=str(memo.pk)).exists()


def test_withdrawing_while_sending_stops_the_send_for_good(
    memo: Memo, developers: dict[str, Developer], mailgun: Provider, later: list[Any], eager: None
) -> None:
    for n in range(4):
        make_developer(f"cn-x{n}", "CN")
    dispatched(memo)  # its batches caught (`later`): the test sends them itself
    ids = list(Delivery.objects.filter(memo=memo).order_by("id").values_list("id", flat=True))
    delivery_send_batch(delivery_ids=ids[:2])
    assert len(memo_emails(mailgun)) == 2

    done = memo_withdraw(memo=memo, by=None, reason=REASON)

    assert done.cancelled == 4 and done.notified == 2
    cancelled = Delivery.objects.filter(memo=memo, status=Delivery.Status.CANCELLED)
    assert set(cancelled.values_list("status_reason", flat=True)) == {"not sent: the memo was withdrawn"}
    delivery_send_batch(delivery_ids=ids)  # a batch still in the queue sends nothing
    deliveries_sweep()
    statuses = sorted(Delivery.objects.filter(memo=memo).values_list("status", flat=True))
    assert statuses == ["cancelled"] * 4 + ["sent"] * 2
    # The provider took the two memo emails, then the two notices: nothing else.
    notice_ids = {str(n.pk) for n in notices().values()}
    withdrawals = [a for a in mailgun.accepted if a.first("h:X-Memo-Notification") in notice_ids]
    assert len(memo_emails(mailgun)) == 2 and len(withdrawals) == 2
    received = Delivery.objects.filter(memo=memo, status="sent").values_list("developer__external_id", flat=True)
    assert sorted(notices()) == sorted(received)
    assert all(n.status == Notification.Status.SENT for n in notices().values())


def memo_emails(provider: Provider) -> list[Any]:
    """What the provider took of the memo's own send (the admins' notices aside)."""
    return [a for a in provider.accepted if a.first("v:delivery_id")]


def test_a_paused_memo_can_be_withdrawn_and_nobody_is_told_when_nothing_went_out(
    memo: Memo, developers: dict[str, Developer], later: list[Any], eager: None
) -> None:
    dispatched(memo)
    memo_pause(memo=memo, by=None)
    done = memo_withdraw(memo=memo, by=None, reason=REASON)
    assert done.notified == 0 and done.cancelled == 2
    assert Memo.objects.get(pk=memo.pk).status == Memo.Status.WITHDRAWN and not notices()
    record = EvidenceRecord.objects.get(memo=memo, kind=EvidenceRecord.Kind.WITHDRAWAL)
    assert record.payload["notified"] == 0 and record.payload["notice_hashes"] == {}


@pytest.mark.parametrize("status", ["draft", "approved", "cancelled"])
def test_a_memo_that_was_never_sent_is_not_withdrawn(memo: Memo, status: str) -> None:
    memo_in(memo, status)
    with pytest.raises(WithdrawalRefused, match="only a memo whose send started"):
        memo_withdraw(memo=memo, by=None, reason=REASON)
    memo.refresh_from_db()
    assert memo.status == status and memo.withdrawn_at is None and not memo.withdrawal_reason
    assert not EvidenceRecord.objects.filter(memo=memo, kind=EvidenceRecord.Kind.WITHDRAWAL).exists()


def test_a_withdrawal_needs_a_reason_and_happens_once(
    memo: Memo, developers: dict[str, Developer], eager: None
) -> None:
    sent_memo(memo)
    for reason in ["", "   ", "x" * 501]:
        with pytest.raises(WithdrawalRefused):
            memo_withdraw(memo=memo, by=None, reason=reason)
    assert Memo.objects.get(pk=memo.pk).status == Memo.Status.SENT and not notices()
    memo_withdraw(memo=memo, by=None, reason=REASON)
    with pytest.raises(WithdrawalRefused, match="is withdrawn"):
        memo_withdraw(memo=memo, by=None, reason="again")
    assert len(notices()) == 2


def test_a_withdrawn_memo_sends_no_more_reminders(memo: Memo, developers: dict[str, Developer], clock: Any) -> None:
    Memo.objects.filter(pk=memo.pk).update(ack_deadline=timezone.now() + dt.timedelta(days=10), reminder_days=[7])
    memo.refresh_from_db()
    sent_memo(memo)
    memo_withdraw(memo=memo, by=None, reason=REASON)
    clock.move_to(timezone.now() + dt.timedelta(days=4))  # the 7-day reminder is due
    assert reminders_send_due() == 0
    with pytest.raises(RemindRefused):
        memo_remind_now(memo=Memo.objects.get(pk=memo.pk), by=None)
    assert not Delivery.objects.filter(memo=memo, kind=Delivery.Kind.REMINDER).exists()


def test_send_memo_withdraw_needs_a_reason(memo: Memo, developers: dict[str, Developer]) -> None:
    sent_memo(memo)
    with pytest.raises(CommandError, match="needs a reason"):
        call_command("send_memo", memo.slug, "--withdraw")
    with pytest.raises(CommandError, match="--reason goes with --withdraw"):
        call_command("send_memo", memo.slug, "--reason", REASON)
    out = io.StringIO()
    call_command("send_memo", memo.slug, "--withdraw", "--reason", REASON, stdout=out)
    assert out.getvalue().strip() == (
        f"{memo.slug}: withdrawn, 0 queued deliveries will not be sent, 2 developers who received it are told."
    )
    assert Memo.objects.get(pk=memo.pk).withdrawal_reason == REASON
    with pytest.raises(CommandError, match="is withdrawn"):
        call_command("send_memo", memo.slug, "--withdraw", "--reason", REASON)


def test_the_withdraw_page_asks_why_and_withdraws(memo: Memo, developers: dict[str, Developer]) -> None:
    sent_memo(memo)
    carol = client_of(staff("carol", "Composer"))
    page = carol.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert 'id="withdraw"' in page and 'id="send-correction"' in page
    url = reverse("admin:memos_memo_withdraw", args=[memo.pk])
    form = carol.get(url).content.decode()
    assert 'id="withdraw-form"' in form and "the 2 developers who received it are emailed" in form

    refused = carol.post(url, {"reason": "  "}).content.decode()
    assert "A withdrawal needs a reason" in refused and 'id="reason-error"' in refused
    assert Memo.objects.get(pk=memo.pk).status == Memo.Status.SENT

    done = carol.post(url, {"reason": REASON}, follow=True).content.decode()
    assert "Withdrew “Regions blocked”: 0 queued emails will not be sent, and the 2 developers" in done
    assert 'id="memo-withdrawn"' in done and "a corrected notice follows" in done
    assert 'id="withdraw"' not in done  # nothing left to withdraw
    dashboard = carol.get(reverse("admin:memos_memo_dashboard", args=[memo.pk])).content.decode()
    assert "Withdrawn on " in dashboard and "2 of 2 were sent before the withdrawal" in dashboard


def test_a_viewer_may_not_withdraw_and_a_draft_cannot_be(memo: Memo, developers: dict[str, Developer]) -> None:
    victor = client_of(staff("victor", "Viewer"))
    carol = client_of(staff("carol", "Composer"))
    draft_url = reverse("admin:memos_memo_withdraw", args=[memo.pk])
    page = carol.post(draft_url, {"reason": REASON}, follow=True).content.decode()
    assert "is draft: only a memo whose send started" in page
    assert Memo.objects.get(pk=memo.pk).status == Memo.Status.DRAFT

    sent_memo(memo)
    assert 'id="withdraw"' not in victor.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    for response in [victor.get(draft_url), victor.post(draft_url, {"reason": REASON})]:
        assert response.status_code == 403
    assert Memo.objects.get(pk=memo.pk).status == Memo.Status.SENT and not notices()


@pytest.mark.e2e
def test_with_a_real_worker_nothing_queued_goes_out_after_a_withdrawal(
    memo: Memo, developers: dict[str, Developer], worker: Path
) -> None:
    """The send's batches reach a real worker only after the withdrawal: it sends none of
    them, and sends the notices to the two who had already received the memo."""
    for n in range(4):
        make_developer(f"cn-x{n}", "CN")
    approve(memo)
    memo_send_start(memo=memo, dispatch_in_worker=False)
    with transaction.atomic():
        memo_dispatch(memo_id=memo.pk)  # its batches are enqueued when this commits
        first = list(Delivery.objects.filter(memo=memo).order_by("id").values_list("id", flat=True)[:2])
        delivery_send_batch(delivery_ids=first)  # handed over here, before the withdrawal
        memo_withdraw(memo=memo, by=None, reason=REASON)
    wait_for(lambda: len(notices()) == 2 and not notices_waiting(), what="the worker to send the two notices")
    statuses = sorted(Delivery.objects.filter(memo=memo).values_list("status", flat=True))
    assert statuses == ["cancelled"] * 4 + ["sent"] * 2
    received = set(Delivery.objects.filter(pk__in=first).values_list("developer__email", flat=True))
    # Of what the worker sent developers (the admins' approval notices aside): the two notices only.
    addresses = set(Developer.objects.values_list("email", flat=True))
    to_developers = [m for m in sent_emails(worker) if str(m["To"]) in addresses]
    assert sorted(str(m["To"]) for m in to_developers) == sorted(received)
    # (strip: a subject all in encoded words is read back with the space of its folding)
    assert all(str(m["Subject"]).strip().startswith(("Withdrawn", "已撤回")) for m in to_developers)


def sent_emails(outbox: Path) -> list[Any]:
    """The emails the worker wrote to the outbox (tests/browsing.py has the same, behind Playwright)."""
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in outbox.glob("*.eml")]


def notices_waiting() -> bool:
    waiting = [Notification.Status.QUEUED, Notification.Status.SENDING]
    return Notification.objects.filter(kind=Notification.Kind.WITHDRAWAL, status__in=waiting).exists()


def test_an_answer_pressed_while_a_withdrawal_commits_waits_for_it_and_is_refused(
    memo: Memo, developers: dict[str, Developer]
) -> None:
    """On PostgreSQL the page's POST and the withdrawal run at once: the answer waits for
    the withdrawal's transaction and is refused, never recorded after withdrawn_at."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's writers take turns: there is no such race")
    sent_memo(memo)
    withdrawn, commit = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def withdraw() -> None:
        try:
            with transaction.atomic():
                memo_withdraw(memo=memo, by=None, reason=REASON)
                withdrawn.set()
                commit.wait(timeout=60)
        finally:
            connection.close()

    def press() -> None:
        try:
            answered(memo, developers["cn"])
            outcome["answered"] = True
        except AnswerInvalid as exc:
            outcome["refused"] = exc.errors
        finally:
            connection.close()

    withdrawer, presser = threading.Thread(target=withdraw), threading.Thread(target=press)
    withdrawer.start()
    assert withdrawn.wait(timeout=60)
    presser.start()
    wait_for(lambda: outcome or waiting_on_a_lock(), timeout=30, what="the answer to finish or wait")
    commit.set()
    withdrawer.join(timeout=60)
    presser.join(timeout=60)
    assert outcome == {"refused": {"response": "This memo was withdrawn: it takes no answers."}}
    assert not Answer.objects.filter(memo=memo).exists()


def waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def test_the_withdrawal_commits_first_and_its_notices_follow_in_pages_that_a_rerun_does_not_repeat(
    memo: Memo, developers: dict[str, Developer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(withdrawal, "NOTICE_PAGE", 1)
    sent_memo(memo)
    done = memo_withdraw(memo=memo, by=None, reason=REASON)  # its task waits in the broker

    assert done.notified == 2 and not notices()  # the notices are not in the withdrawal's transaction
    record = EvidenceRecord.objects.get(memo=memo, kind=EvidenceRecord.Kind.WITHDRAWAL)
    assert Memo.objects.get(pk=memo.pk).status == Memo.Status.WITHDRAWN and record.payload["notified"] == 2
    assert withdrawal_notify(memo_id=memo.pk) == 2  # the task, a page of one at a time
    assert withdrawal_notify(memo_id=memo.pk) == 0  # delivered twice: nobody is told twice
    assert sorted(notices()) == ["cn-1", "ru-1"]
    # The evidence named the texts the notices then had, without making them first.
    assert record.payload["notice_hashes"] == {n.language: n.text_hash for n in notices().values()}


def test_an_email_in_flight_at_the_withdrawal_is_told_and_what_recovery_requeues_is_cancelled(
    memo: Memo, developers: dict[str, Developer], later: list[Any], eager: None
) -> None:
    for n in range(2):
        make_developer(f"cn-x{n}", "CN")
    dispatched(memo)
    ids = list(Delivery.objects.filter(memo=memo).order_by("id").values_list("id", flat=True))
    in_flight, crashed = ids[:2], ids[2:3]
    assert deliveries_claim(delivery_ids=in_flight + crashed) == set(in_flight + crashed)  # a worker's calls

    done = memo_withdraw(memo=memo, by=None, reason=REASON)
    assert done.cancelled == 1 and done.notified == 0 and not notices()  # nothing handed over yet

    # The provider took the first two after all; the worker of the third died, and its
    # reconciliation found the provider never got it, so puts it back in the queue.
    deliveries_record_sent(delivery_ids=in_flight, message_id="<call-1@loopback>", language="en")
    assert deliveries_record_unsent(delivery_ids=crashed, reason="the worker sending it stopped") == crashed
    deliveries_sweep()

    told = Delivery.objects.filter(pk__in=in_flight).values_list("developer__external_id", flat=True)
    assert sorted(notices()) == sorted(told)
    rows = Delivery.objects.filter(memo=memo).exclude(pk__in=in_flight)
    assert {(d.status, d.status_reason) for d in rows} == {("cancelled", "not sent: the memo was withdrawn")}
    deliveries_sweep()  # the next minute's: nobody is told twice
    assert Notification.objects.filter(kind=Notification.Kind.WITHDRAWAL).count() == 2


def test_emails_of_unknown_outcome_are_not_sent_again_once_the_memo_is_withdrawn(
    memo: Memo, developers: dict[str, Developer], later: list[Any]
) -> None:
    dispatched(memo)
    ids = list(Delivery.objects.filter(memo=memo).values_list("id", flat=True))
    deliveries_claim(delivery_ids=ids)
    deliveries_record_unknown(delivery_ids=ids, reason="the worker sending it stopped mid-call")
    memo_withdraw(memo=memo, by=None, reason=REASON)
    carol = client_of(staff("carol", "Composer"))

    page = carol.post(reverse("admin:memos_memo_resend_unknown", args=[memo.pk]), follow=True).content.decode()

    assert "“Regions blocked” is withdrawn: its emails are sent again only while it is sending or sent." in page
    assert set(Delivery.objects.filter(memo=memo).values_list("status", flat=True)) == {"outcome_unknown"}
    assert not AuditEvent.objects.filter(action="memo.unknown_resent").exists()


def test_a_withdrawal_names_the_memo_by_the_subject_each_language_was_sent(
    developers: dict[str, Developer], later: list[Any], eager: None
) -> None:
    """Not by its title (an internal name, in the admins' language)."""
    memo = make_memo(title="INTERNAL q3 geo-block v2", subject="Regions blocked from {{ memo.effective_date }}")
    memo.translations.update(subject="部分地区的访问将被阻止")
    sent_memo(memo, {developers["cn"]: "delivered", developers["ru"]: "delivered"})
    mail.outbox.clear()
    memo_withdraw(memo=memo, by=staff("carol", "Composer"), reason=REASON)
    by_address = {m.to[0]: m for m in mail.outbox}
    english, chinese = by_address["ru-1@example.com"], by_address["cn-1@example.com"]
    assert english.subject == "Withdrawn: Regions blocked from 2027-07-09"
    assert "The notice “Regions blocked from 2027-07-09” that we sent you on" in english.body
    assert chinese.subject == "已撤回：部分地区的访问将被阻止" and "通知“部分地区的访问将被阻止”" in chinese.body
    assert not any("INTERNAL" in f"{m.subject}{m.body}" for m in mail.outbox)
