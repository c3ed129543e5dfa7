"""Sending through Amazon SES: our backend (anymail's, batched with SendBulkEmail) and
boto3 talking HTTP to a loopback SES (tests/loopback_amazon_ses.py), judged by the emails
SES would deliver and by each developer's delivery."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.dispatch import send_batch_size
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import WEBHOOK_SECRET, Clock, make_developer, make_memo
from tests.loopback_amazon_ses import Delivered, SESProvider, ses_notifications, ses_server
from tests.provider_cases import (
    SUBSTITUTABLE,
    TESTS_A_VALUE,
    assert_full_render,
    assert_nobody_lost_and_sent_means_once,
    assert_the_refused_failed_and_the_others_have_their_own_ids,
    developers_named_trickily,
    make_developers,
    one_each,
    queued,
    sent_through_the_admin,
    sent_with_three_refused,
)

pytestmark = pytest.mark.django_db

BACKEND = "memo_service.backends.amazon_ses.EmailBackend"
BATCH = 50  # SES's destinations per SendBulkEmail call
URL = "/anymail/amazon_ses/tracking/"
# The memo's own text has what SES reads as a merge field: sent as a template, SES would
# fill "{{token}}" with nothing.
LITERAL_BRACES = {"text_body": "Put {{ '{{' }}token}} in your config, {{ developer.name }}"}


@pytest.fixture
def ses(settings: Any) -> Iterator[SESProvider]:
    """Our SES backend, boto3 pointed at a loopback SES."""
    with ses_server() as provider:
        settings.EMAIL_BACKEND = BACKEND
        settings.ANYMAIL = {"AMAZON_SES_CLIENT_PARAMS": provider.client_params(), "WEBHOOK_SECRET": WEBHOOK_SECRET}
        yield provider


def by_recipient(ses: SESProvider) -> dict[str, Delivered]:
    return one_each(ses.accepted, lambda e: e.address)


def header(email: Delivered, name: str) -> list[str]:
    return [h["value"] for h in email.headers if h["name"].lower() == name.lower()]


@pytest.mark.parametrize(
    "template",
    [SUBSTITUTABLE, TESTS_A_VALUE, LITERAL_BRACES],
    ids=["substitutable", "tests-a-value", "literal-braces-in-the-memo"],
)
def test_a_memo_to_two_and_a_half_batches_arrives_once_each_in_three_calls_exactly_as_rendered(
    ses: SESProvider, template: dict[str, str], eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    developers_named_trickily(125, "ses")
    memo = sent_through_the_admin(make_memo(**template), django_capture_on_commit_callbacks)

    assert len(ses.calls) == math.ceil(125 / BATCH) and max(map(len, ses.calls)) == BATCH
    emails = by_recipient(ses)
    assert len(emails) == 125
    renderer = MemoRenderer(memo)
    for delivery in Delivery.objects.filter(memo=memo).select_related("developer"):
        got = emails[delivery.developer.email]
        assert_full_render(renderer, delivery.developer, got.subject, got.html, got.text)
        assert header(got, "X-Metadata") == [f'{{"delivery_id": "{delivery.pk}"}}']
        assert header(got, "X-Tag") == [f"memo-{memo.pk}"]
        assert (delivery.status, delivery.provider_message_id) == ("sent", got.message_id)
    some = emails["ses-00007@example.com"]
    assert "&amp; &lt;Sons&gt;" in some.html and "&amp;amp;" not in some.html
    assert 'O\'Neil & <Sons> "7"' in some.text
    if template is TESTS_A_VALUE:
        assert some.text.startswith("Not China, O'Neil")
    if template is LITERAL_BRACES:
        assert some.text.startswith("Put {{token}} in your config, O'Neil")
    assert Memo.objects.get(pk=memo.pk).status == "sent"


def test_recipients_ses_refuses_fail_with_its_reason_and_the_others_are_sent_once_with_their_own_ids(
    ses: SESProvider,
) -> None:
    sent_with_three_refused(make_memo(), ses)

    assert len(ses.calls) == 1 and len(ses.calls[0]) == 12  # one call took all twelve
    failed = assert_the_refused_failed_and_the_others_have_their_own_ids(by_recipient(ses), lambda e: e.message_id)
    for delivery in failed:
        assert "Email address is not verified" in delivery.status_reason
        assert delivery.developer.email in delivery.status_reason


def test_recipients_ses_refuses_for_now_in_a_call_it_took_are_sent_later_not_failed(
    ses: SESProvider, later: list[Any], clock: Clock
) -> None:
    """SES paces the account per entry (ACCOUNT_THROTTLED for some, HTTP 200): those wait
    and go on the next try; the others went at once; nobody fails or gets it twice."""
    memo = make_memo()
    make_developers("ru-ok", 4)
    make_developers("ru-busy", 2)
    ses.busy = {"ru-busy"}
    delivery_send_batch(delivery_ids=queued(memo))

    waiting = Delivery.objects.filter(status="queued").select_related("developer")
    assert sorted(d.developer.external_id for d in waiting) == ["ru-busy0", "ru-busy1"]
    assert all("Maximum sending rate exceeded" in d.status_reason and d.not_before for d in waiting)
    assert [sorted(ids) for ids, _ in later] == [sorted(d.pk for d in waiting)] and later[0][1] > 0
    assert len(by_recipient(ses)) == 4

    ses.busy = set()
    clock.move_to(timezone.now() + dt.timedelta(seconds=later[0][1] + 1))
    delivery_send_batch(delivery_ids=later[0][0])
    assert set(Delivery.objects.filter(memo=memo).values_list("status", flat=True)) == {"sent"}
    assert len(by_recipient(ses)) == 6  # each exactly once


def test_a_call_ses_refuses_for_every_recipient_fails_each_with_its_reason(ses: SESProvider, later: list[Any]) -> None:
    memo = make_memo()
    make_developers("ru-bad", 3)
    ses.refuse = {"ru-bad"}
    delivery_send_batch(delivery_ids=queued(memo))
    assert len(ses.calls) == 1 and ses.accepted == [] and later == []
    failed = Delivery.objects.filter(status="failed")
    assert failed.count() == 3 and all("Email address is not verified" in d.status_reason for d in failed)


def post(client: Client, body: bytes, headers: dict[str, str]) -> int:
    return client.post(URL, body, content_type=headers.pop("Content-Type"), headers=headers).status_code


def test_ses_delivery_and_bounce_notifications_move_the_right_deliveries(ses: SESProvider, client: Client) -> None:
    memo = make_memo()
    make_developers("ru-", 4)
    delivery_send_batch(delivery_ids=queued(memo))
    assert [post(client, *p) for p in ses_notifications(ses, WEBHOOK_SECRET, "Delivery")] == [200] * 4
    assert [post(client, *p) for p in ses_notifications(ses, WEBHOOK_SECRET, "Bounce", only="ru-2@")] == [200]

    statuses = dict(Delivery.objects.values_list("developer__external_id", "status"))
    assert statuses == {"ru-0": "delivered", "ru-1": "delivered", "ru-2": "bounced", "ru-3": "delivered"}
    assert Developer.objects.get(external_id="ru-2").email_status == "bounced"


def test_a_notification_without_our_metadata_finds_its_delivery_by_its_own_message_id(
    ses: SESProvider, client: Client
) -> None:
    memo = make_memo()
    make_developers("ru-", 3)
    delivery_send_batch(delivery_ids=queued(memo))
    for email in ses.accepted:
        email.headers = [h for h in email.headers if h["name"] != "X-Metadata"]
    assert [post(client, *p) for p in ses_notifications(ses, WEBHOOK_SECRET, "Bounce", only="ru-1@")] == [200]
    statuses = dict(Delivery.objects.values_list("developer__external_id", "status"))
    assert statuses == {"ru-0": "sent", "ru-1": "bounced", "ru-2": "sent"}


def test_a_notification_without_the_webhook_secret_is_refused_and_changes_nothing(
    ses: SESProvider, client: Client
) -> None:
    memo = make_memo()
    make_developer("ru-0", "RU")
    make_developer("ru-1", "RU")
    delivery_send_batch(delivery_ids=queued(memo))
    [(body, headers)] = ses_notifications(ses, "hook:wrong", "Delivery", only="ru-0@")
    assert post(client, body, headers) in (400, 401, 403)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}


@pytest.mark.parametrize(
    "answer",
    [
        (429, "TooManyRequestsException", "Too Many Requests"),
        (400, "Throttling", "Maximum sending rate exceeded."),
    ],
    ids=["sesv2-429", "throttling"],
)
def test_ses_saying_too_fast_makes_the_call_wait_and_then_everyone_is_sent_once(
    ses: SESProvider, later: list[tuple[list[int], float]], clock: Clock, answer: tuple[int, str, str]
) -> None:
    memo = make_memo()
    make_developers("ru-", 5)
    ses.failures.append(answer)
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)

    assert ses.accepted == [] and set(Delivery.objects.values_list("status", flat=True)) == {"queued"}
    [(retry_ids, countdown)] = later
    assert sorted(retry_ids) == sorted(ids) and countdown > 0
    waiting = Delivery.objects.filter(pk__in=ids)
    assert all(d.not_before is not None and d.not_before > timezone.now() for d in waiting)
    clock.move_to(max(d.not_before for d in waiting if d.not_before is not None))  # the wait waited out
    delivery_send_batch(delivery_ids=retry_ids)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert len(by_recipient(ses)) == 5 and len(ses.calls) == 1  # nobody twice, in one call


def test_ses_pacing_the_account_in_every_entry_of_a_call_makes_the_call_wait_too(
    ses: SESProvider, later: list[tuple[list[int], float]], clock: Clock
) -> None:
    """An HTTP 200 whose every entry says ACCOUNT_THROTTLED refuses no recipient."""
    memo = make_memo()
    make_developers("ru-", 5)
    ses.entry_failures.append(("ACCOUNT_THROTTLED", "Maximum sending rate exceeded."))
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)

    assert ses.accepted == [] and set(Delivery.objects.values_list("status", flat=True)) == {"queued"}
    [(retry_ids, _)] = later
    clock.move_to(max(d.not_before for d in Delivery.objects.all() if d.not_before is not None))
    delivery_send_batch(delivery_ids=retry_ids)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"} and len(by_recipient(ses)) == 5


def test_an_answer_ses_never_gave_leaves_the_call_outcome_unknown_and_nobody_is_sent_twice(
    ses: SESProvider, settings: Any, later: list[Any]
) -> None:
    """SES may have taken a call whose answer timed out, and it cannot be asked or
    deduplicate a second one: each recipient is flagged, not failed and not resent
    (boto3's own retries would have sent it again)."""
    settings.ANYMAIL = {
        **settings.ANYMAIL,
        "AMAZON_SES_CLIENT_PARAMS": {**ses.client_params(), "config": {"read_timeout": 0.3}},
    }
    memo = make_memo()
    make_developers("ru-", 3)
    ses.delay = 1.0
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    delivery_send_batch(delivery_ids=ids)  # a rerun sends nothing

    assert set(Delivery.objects.values_list("status", flat=True)) == {"outcome_unknown"} and later == []
    assert ses.requests == 1 and len(ses.calls) == 1  # the one call, recorded by SES; never repeated


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_workers_killed_mid_send_through_ses_lose_nobody_and_flag_whom_ses_may_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """SES can neither be asked what it took nor deduplicate a call: what a killed worker
    left is flagged outcome_unknown, never sent again, and nobody is lost."""
    from tests.test_faults import BROKER, audience, send_while_killing_workers

    if BROKER.startswith("filesystem://"):
        pytest.skip("killed workers need Redis or RabbitMQ (see test_faults.ON_FILESYSTEM_BROKER)")
    recipients = 1_000
    memo = audience(recipients)
    settings.EMAIL_BACKEND = BACKEND  # send_memo sizes the send tasks for it, as in production
    with ses_server() as ses:
        settings.ANYMAIL = {"AMAZON_SES_CLIENT_PARAMS": ses.client_params()}
        kills = send_while_killing_workers(memo, ses, tmp_path, monkeypatch, kills=6, backend=BACKEND)

    outcome = assert_nobody_lost_and_sent_means_once(memo, recipients, (e.address for e in ses.accepted))
    ids = {e.address: e.message_id for e in ses.accepted}
    assert all(d.provider_message_id == ids[a] for a, d in outcome.deliveries.items() if d.status == "sent")
    assert kills.between_acceptance_and_commit and outcome.unknown  # a killed call's recipients, flagged
    assert len(outcome.unknown) <= kills.made * send_batch_size()  # at most a send task's worth per kill
