"""A dead worker's deliveries are settled by asking the provider what it accepted
(the loopback Mailgun's Logs API, or its events API on an account without it), judged
by what the provider recorded."""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from memo_service.backends import mailgun as mailgun_backend
from memo_service.memos.delivery_status import delivery_claim
from memo_service.memos.evidence.sequencer import evidence_seal
from memo_service.memos.evidence.verify import evidence_verify
from memo_service.memos.models import AuditEvent, Delivery, EvidenceRecord, Memo, SendLease
from memo_service.memos.send import reconcile, sweeper
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import dispatched, sent_delivery, sent_memo, wait_for
from tests.test_evidence import emails
from tests.test_faults import audience

pytestmark = pytest.mark.django_db

BATCHED = "memo_service.backends.mailgun.EmailBackend"


@pytest.fixture
def sweep(django_capture_on_commit_callbacks: Any) -> Any:
    """Beat's sweeper, with what it enqueues after commit run at once (tasks are eager)."""

    def run() -> dict[str, int]:
        with django_capture_on_commit_callbacks(execute=True):
            return sweeper.deliveries_sweep()

    return run


@pytest.fixture
def batched(mailgun: Any, settings: Any, eager: None) -> Any:
    settings.EMAIL_BACKEND = BATCHED
    settings.PROVIDER_EVENTS_LAG_SECONDS = 0
    return mailgun


def queued_ids(memo: Memo) -> dict[str, int]:
    """The memo approved and its deliveries queued (conftest's dispatched): {country: delivery id}."""
    deliveries = Delivery.objects.filter(memo=dispatched(memo)).select_related("developer")
    return {d.developer.country.code: d.pk for d in deliveries}


def died_holding(memo: Memo, ids: list[int], renewed_ago: float = 60) -> SendLease:
    """A worker process that took a lease on `ids`, claimed them and died: its lease
    was last renewed `renewed_ago` seconds ago and has expired. Its rows are written as
    the killed process left them (claimed, the answers of its calls never recorded), its
    lease as it left it: a state only a SIGKILL makes (tests/test_faults.py makes it so)."""
    Delivery.objects.filter(pk__in=ids).update(status="sending", status_changed_at=timezone.now())
    then = timezone.now() - dt.timedelta(seconds=renewed_ago)
    return SendLease.objects.create(
        holder="gone-host:4242",
        memo=memo,
        delivery_ids=ids,
        created_at=then,
        last_renewed_at=then,
        expires_at=then + dt.timedelta(seconds=30),
    )


def per_recipient(provider: Any) -> collections.Counter[str]:
    return collections.Counter(m.first("to").rsplit("<", 1)[-1].rstrip(">") for m in provider.accepted)


def test_it_marks_sent_what_mailgun_accepted_and_sends_again_exactly_what_it_never_got(sweep, memo, batched):
    """The dead worker's call reached Mailgun for the developer in CN and not for the one
    in RU: the CN delivery is recorded sent from Mailgun's event, the RU one is sent
    again, and each developer has exactly one email at Mailgun."""
    ids = queued_ids(memo)
    delivery_send_batch(delivery_ids=[ids["CN"]])  # Mailgun accepted it...
    message_id, sent_at = Delivery.objects.values_list("provider_message_id", "sent_at").get(pk=ids["CN"])
    Delivery.objects.filter(pk=ids["CN"]).update(provider_message_id="", sent_at=None)  # ...the answer was lost
    died_holding(memo, [ids["CN"], ids["RU"]])
    result = sweep()
    assert result["leases"] == 1
    assert per_recipient(batched) == {"cn-1@example.com": 1, "ru-1@example.com": 1}
    cn, ru = Delivery.objects.get(pk=ids["CN"]), Delivery.objects.get(pk=ids["RU"])
    assert (cn.status, cn.provider_message_id, cn.language) == ("sent", message_id, "zh-hans")
    assert cn.sent_at is not None and sent_at is not None
    assert abs((cn.sent_at - sent_at).total_seconds()) < 1  # when Mailgun took it, not when we asked
    assert ru.status == "sent" and ru.attempts == 1  # the dead worker's claim was never counted here
    assert not SendLease.objects.exists()
    assert Memo.objects.get(pk=memo.pk).status == "sent"


def test_it_follows_the_events_api_pages_to_the_end(sweep, memo, developers, batched, monkeypatch):
    """An account with only the events API, one event per page: every page is read, and
    nothing is sent twice."""
    batched.logs_unavailable = 404
    monkeypatch.setattr(mailgun_backend, "EVENTS_PAGE_LIMIT", 1)
    ids = queued_ids(memo)
    delivery_send_batch(delivery_ids=list(ids.values()))
    died_holding(memo, list(ids.values()))
    sweep()
    assert batched.event_requests == 3  # two events, then the empty page that ends it
    assert set(per_recipient(batched).values()) == {1}
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}


def answers_lost(memo: Memo, accepted: list[int], never_sent: list[int]) -> dict[int, str]:
    """A worker whose call Mailgun took for `accepted` (its answer lost) and that died
    before it called for `never_sent`; returns the message id Mailgun gave each accepted one."""
    delivery_send_batch(delivery_ids=accepted)
    given = dict(Delivery.objects.filter(pk__in=accepted).values_list("pk", "provider_message_id"))
    Delivery.objects.filter(pk__in=accepted).update(provider_message_id="", sent_at=None)
    died_holding(memo, accepted + never_sent)
    return given


def test_what_mailgun_accepted_is_found_in_its_logs_api_and_everyone_gets_it_once(sweep, batched):
    """250 developers; the dead worker's call reached Mailgun for 130 of them and not for
    the other 120. Mailgun's Logs API (100 a page) shows the 130: they are recorded sent
    with the message id Mailgun gave them, the 120 are sent again, and every developer
    has exactly one email at Mailgun. The deprecated events API is never asked."""
    memo = dispatched(audience(250))
    ids = sorted(Delivery.objects.filter(memo=memo).values_list("pk", flat=True))
    given = answers_lost(memo, ids[:130], ids[130:])
    sweep()
    assert batched.log_requests == 3 and batched.event_requests == 0  # two pages, then the empty one
    assert len(per_recipient(batched)) == 250 and set(per_recipient(batched).values()) == {1}
    deliveries = Delivery.objects.filter(memo=memo)
    assert set(deliveries.values_list("status", flat=True)) == {"sent"}
    assert {d.pk: d.provider_message_id for d in deliveries if d.pk in given} == given
    assert {d.attempts for d in deliveries if d.pk not in given} == {1}  # sent again once
    assert Memo.objects.get(pk=memo.pk).status == "sent"


@pytest.mark.parametrize("status", [404, 403], ids=["no-logs-api", "plan-without-logs-api"])
def test_an_account_without_the_logs_api_is_asked_through_the_events_api(sweep, memo, batched, status):
    """Mailgun answers 404 (or 403 on a plan without it) for the Logs API: the same
    question goes to the events API, with the same outcome."""
    batched.logs_unavailable = status
    ids = queued_ids(memo)
    given = answers_lost(memo, [ids["CN"]], [ids["RU"]])
    sweep()
    assert batched.log_requests == 1 and batched.event_requests >= 1
    assert per_recipient(batched) == {"cn-1@example.com": 1, "ru-1@example.com": 1}
    cn, ru = Delivery.objects.get(pk=ids["CN"]), Delivery.objects.get(pk=ids["RU"])
    assert (cn.status, cn.provider_message_id, ru.status) == ("sent", given[ids["CN"]], "sent")


def test_a_logs_api_failing_for_a_while_is_asked_again_not_taken_for_an_account_without_it(sweep, memo, batched):
    """A 503 from the Logs API is an outage, not an account without it: nothing is
    settled from a guess, and the next run asks again."""
    batched.logs_unavailable = 503
    ids = queued_ids(memo)
    answers_lost(memo, [ids["CN"]], [])
    sweep()
    assert "asking the provider failed" in SendLease.objects.get().note and batched.event_requests == 0
    assert Delivery.objects.get(pk=ids["CN"]).status == "sending"
    batched.logs_unavailable = 0
    sweep()
    assert Delivery.objects.get(pk=ids["CN"]).status == "sent" and per_recipient(batched) == {"cn-1@example.com": 1}


def test_it_waits_for_the_providers_events_before_it_asks(memo, batched, settings):
    """Mailgun shows an event only seconds after the call: reconciliation asks no sooner
    than PROVIDER_EVENTS_LAG_SECONDS after the dead holder's last sign of life, so an
    accepted email is never taken for a missing one."""
    settings.PROVIDER_EVENTS_LAG_SECONDS = 45
    ids = queued_ids(memo)
    lease = died_holding(memo, [ids["CN"]], renewed_ago=40)
    [(lease_id, wait)] = reconcile.leases_expired_take_over(now=timezone.now())
    assert lease_id == lease.pk
    assert 14 < wait <= 15  # 40 s ago + 10 s (a renewal period) + 45 s
    assert SendLease.objects.get(pk=lease.pk).holder == "sweeper:gone-host:4242"
    assert reconcile.leases_expired_take_over(now=timezone.now()) == []  # taken once


def test_a_live_workers_lease_is_left_alone(sweep, memo, batched):
    ids = queued_ids(memo)
    lease = died_holding(memo, [ids["CN"]], renewed_ago=0)
    assert sweep()["leases"] == 0
    assert SendLease.objects.get(pk=lease.pk).holder == "gone-host:4242"
    assert Delivery.objects.get(pk=ids["CN"]).status == "sending" and not batched.accepted


def test_queued_deliveries_of_a_dead_workers_task_are_sent_without_waiting_for_the_broker(sweep, memo, batched):
    """Redis would return the dead worker's task after an hour: the lease returns its
    unsent deliveries at the sweeper's next run."""
    ids = queued_ids(memo)
    died_holding(memo, [])
    SendLease.objects.update(delivery_ids=list(ids.values()))
    assert sweep()["leases"] == 1
    assert per_recipient(batched) == {"cn-1@example.com": 1, "ru-1@example.com": 1}


def test_a_lost_answer_is_settled_from_the_providers_events_not_left_unknown(sweep, memo, batched, settings):
    """A read timeout: Mailgun may have the call. The task leaves its deliveries for
    reconciliation, which finds them accepted: sent once, never "outcome unknown"."""
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.3}
    batched.delay = 1.0
    ids = queued_ids(memo)
    delivery_send_batch(delivery_ids=list(ids.values()))
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sending"}
    lease = SendLease.objects.get()
    assert lease.expires_at <= timezone.now()  # released for reconciliation at once
    # Mailgun took the call after our client gave up: the reconciliation waits for that.
    wait_for(lambda: batched.calls == 2, timeout=10, what="Mailgun to record both calls (one per language)")
    SendLease.objects.update(last_renewed_at=timezone.now() - dt.timedelta(seconds=60))
    batched.delay = 0
    sweep()
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert set(per_recipient(batched).values()) == {1} and len(per_recipient(batched)) == 2
    # The evidence says what is known: each email was handed over (the provider's word),
    # with no text hash, since nobody kept the text the dead call carried.
    evidence_seal(memo_id=memo.pk)
    assert evidence_verify(memo).ok
    proved = [entry for r in EvidenceRecord.objects.filter(memo=memo, kind="handover") for entry in emails(r)]
    assert sorted(entry["delivery"] for entry in proved) == sorted(ids.values())
    assert {entry["text_hash"] for entry in proved} == {""}


def test_a_provider_that_cannot_be_asked_now_is_asked_at_the_next_run(sweep, memo, batched, settings):
    ids = queued_ids(memo)
    died_holding(memo, [ids["CN"]])
    good = settings.ANYMAIL
    settings.ANYMAIL = {**good, "MAILGUN_API_URL": "http://127.0.0.1:9/v3"}
    sweep()  # the task fails (and Celery logs it)
    lease = SendLease.objects.get()
    assert "asking the provider failed" in lease.note and lease.expires_at <= timezone.now()
    assert Delivery.objects.get(pk=ids["CN"]).status == "sending"
    settings.ANYMAIL = good
    sweep()
    assert Delivery.objects.get(pk=ids["CN"]).status == "sent" and per_recipient(batched) == {"cn-1@example.com": 1}


def test_without_a_provider_to_ask_the_deliveries_are_outcome_unknown_and_say_why(
    sweep, memo, mailgun, settings, eager
):
    """anymail's own Mailgun backend cannot ask Mailgun: nobody can know."""
    settings.PROVIDER_EVENTS_LAG_SECONDS = 0
    ids = queued_ids(memo)
    died_holding(memo, [ids["CN"]])
    sweep()
    cn = Delivery.objects.get(pk=ids["CN"])
    assert cn.status == "outcome_unknown" and "cannot say whether the provider has it" in cn.status_reason
    assert not mailgun.accepted


def test_deliveries_left_sending_under_no_lease_are_reconciled_too(sweep, memo, batched):
    """Claimed before leases existed (or their lease lost): past the hard time limit."""
    ids = queued_ids(memo)
    delivery_send_batch(delivery_ids=[ids["CN"]])
    long_ago = timezone.now() - sweeper.SENDING_GRACE - dt.timedelta(seconds=1)
    # As a worker without leases left it, long ago, the answer of its call never recorded.
    Delivery.objects.filter(pk=ids["CN"]).update(status="sending", status_changed_at=long_ago)
    assert delivery_claim(delivery_id=ids["RU"])  # a worker's call on its way now
    result = sweep()
    assert result["abandoned"] == 1
    assert Delivery.objects.get(pk=ids["CN"]).status == "sent" and per_recipient(batched) == {"cn-1@example.com": 1}
    assert Delivery.objects.get(pk=ids["RU"]).status == "sending"


def test_a_composer_sends_the_unknown_ones_again_knowing_the_risk(
    memo, developers, batched, admin_user, django_capture_on_commit_callbacks
):
    ids = queued_ids(memo)
    sent_delivery(memo, developers["cn"], "outcome_unknown", reason="the worker stopped")
    sent_delivery(memo, developers["ru"], "sent")
    before = per_recipient(batched)
    with django_capture_on_commit_callbacks(execute=True):
        assert reconcile.memo_unknown_resend(memo=memo, by=admin_user) == 1
    assert per_recipient(batched) - before == {"cn-1@example.com": 1}  # CN's alone, once
    cn = Delivery.objects.get(pk=ids["CN"])
    assert cn.status == "sent"
    audit = AuditEvent.objects.get(action="memo.unknown_resent")
    assert audit.actor == admin_user and audit.detail["delivery_ids"] == [ids["CN"]] and "twice" in audit.detail["risk"]
    assert reconcile.memo_unknown_resend(memo=memo, by=admin_user) == 0  # nothing left to resend


def test_the_memo_page_says_how_many_are_unknown_and_why_and_a_composer_resends_them(
    memo, developers, batched, django_user_model, django_capture_on_commit_callbacks
):
    """The memo page links "N outcome unknown…" to a page with the reasons and the
    duplicate risk; a Viewer cannot resend, a Composer can, audited."""
    from django.contrib.auth.models import Group
    from django.test import Client
    from django.urls import reverse

    def login(name: str, group: str) -> Client:
        user = django_user_model.objects.create_user(name, f"{name}@example.com", f"pw-{name}-123", is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        client = Client()
        client.force_login(user)
        return client

    audience = [developers["cn"], developers["ru"]]
    unknown = {d: "outcome_unknown" for d in audience}
    sent_memo(memo, unknown, reasons={d: reconcile.UNKNOWN_REASON for d in audience})
    composer, viewer = login("carol", "Composer"), login("victor", "Viewer")
    page = composer.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert 'id="outcome-unknown">2 outcome unknown…' in page
    url = reverse("admin:memos_memo_resend_unknown", args=[memo.pk])
    confirm = viewer.get(url).content.decode()
    assert reconcile.UNKNOWN_REASON in confirm and "second copy" in confirm and 'id="resend-unknown"' not in confirm
    assert viewer.post(url).status_code == 403
    assert not batched.accepted and not AuditEvent.objects.filter(action="memo.unknown_resent").exists()
    assert 'id="resend-unknown"' in composer.get(url).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = composer.post(url)
    assert response.status_code == 302
    assert set(per_recipient(batched).values()) == {1} and len(per_recipient(batched)) == 2
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    resent = AuditEvent.objects.get(action="memo.unknown_resent")
    assert resent.actor is not None and resent.actor.username == "carol"
    assert "outcome-unknown" not in composer.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()


def test_deliveries_a_live_lease_also_holds_wait_for_it(sweep, memo, batched):
    """RabbitMQ hands the dead worker's task to a live one at once: while that one holds
    the same deliveries, they are left alone; once it is gone, they are settled."""
    ids = queued_ids(memo)
    dead = died_holding(memo, [ids["CN"], ids["RU"]])
    now = timezone.now()
    live = SendLease.objects.create(
        holder="live-host:1",
        memo=memo,
        delivery_ids=[ids["RU"]],
        created_at=now,
        last_renewed_at=now,
        expires_at=now + dt.timedelta(seconds=30),
    )
    sweep()
    assert per_recipient(batched) == {"cn-1@example.com": 1}
    assert SendLease.objects.get(pk=dead.pk).delivery_ids == [ids["RU"]]
    assert Delivery.objects.get(pk=ids["RU"]).status == "sending"
    live.delete()
    sweep()
    assert per_recipient(batched) == {"cn-1@example.com": 1, "ru-1@example.com": 1}
    assert not SendLease.objects.exists()


def test_two_dead_leases_on_the_same_deliveries_do_not_wait_for_each_other(sweep, memo, batched):
    """A task, and its redelivery, both killed: both leases are reconciled and the
    deliveries they share settled once."""
    ids = queued_ids(memo)
    died_holding(memo, [ids["CN"], ids["RU"]])
    died_holding(memo, [ids["CN"], ids["RU"]], renewed_ago=45)
    sweep()
    assert per_recipient(batched) == {"cn-1@example.com": 1, "ru-1@example.com": 1}
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert not SendLease.objects.exists()
