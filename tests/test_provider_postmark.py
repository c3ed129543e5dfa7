"""Sending through Postmark: anymail's real Postmark backend (ours, batched) talking HTTP
to a loopback Postmark (tests/loopback_postmark.py), judged by the emails Postmark would
deliver and by each developer's delivery."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.models import Delivery, DeliveryEvent, Memo
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import WEBHOOK_SECRET, Clock, dispatched, make_developer, make_memo
from tests.loopback_postmark import BACKEND, PostmarkProvider, postmark_events, postmark_server, recipient
from tests.loopback_provider import basic_auth
from tests.provider_cases import (
    SUBSTITUTABLE,
    TESTS_A_VALUE,
    assert_everyone_got_it_exactly_once,
    assert_full_render,
    assert_the_refused_failed_and_the_others_have_their_own_ids,
    developers_named_trickily,
    make_developers,
    one_each,
    queued,
    sent_through_the_admin,
    sent_with_three_refused,
)

pytestmark = pytest.mark.django_db

BATCH = 500  # Postmark's /email/batch limit


@pytest.fixture
def postmark(settings: Any) -> Iterator[PostmarkProvider]:
    """Our Postmark backend, talking HTTP to a loopback Postmark."""
    with postmark_server() as provider:
        settings.EMAIL_BACKEND = BACKEND
        settings.ANYMAIL = {**provider.settings(), "WEBHOOK_SECRET": WEBHOOK_SECRET}
        yield provider


def by_recipient(postmark: PostmarkProvider) -> dict[str, dict[str, Any]]:
    return one_each(postmark.accepted, recipient)


@pytest.mark.parametrize("template", [SUBSTITUTABLE, TESTS_A_VALUE], ids=["substitutable", "tests-a-value"])
def test_a_memo_to_two_and_a_half_batches_arrives_once_each_in_three_calls_exactly_as_rendered(
    postmark, template, eager, django_capture_on_commit_callbacks
):
    developers_named_trickily(1_250, "pm")
    memo = sent_through_the_admin(make_memo(**template), django_capture_on_commit_callbacks)

    assert len(postmark.calls) == math.ceil(1_250 / BATCH) and max(map(len, postmark.calls)) == BATCH
    emails = by_recipient(postmark)
    assert len(emails) == 1_250
    renderer = MemoRenderer(memo)
    for delivery in Delivery.objects.filter(memo=memo).select_related("developer"):
        got = emails[delivery.developer.email]
        assert_full_render(renderer, delivery.developer, got["Subject"], got["HtmlBody"], got["TextBody"])
        assert got["Metadata"] == {"delivery_id": str(delivery.pk)} and got["Tag"] == f"memo-{memo.pk}"
        assert (delivery.status, delivery.provider_message_id) == ("sent", got["MessageID"])
    some = emails["pm-00007@example.com"]
    assert "Dear O&#39;Neil &amp; &lt;Sons&gt; &#34;7&#34;," in some["HtmlBody"]  # escaped once, by us
    assert "&amp;amp;" not in some["HtmlBody"] and 'O\'Neil & <Sons> "7"' in some["TextBody"]
    if template is TESTS_A_VALUE:
        assert some["TextBody"].startswith("Not China, O'Neil")
    assert Memo.objects.get(pk=memo.pk).status == "sent"


def test_recipients_postmark_refuses_fail_with_its_reason_and_the_others_are_sent_once_with_their_own_ids(postmark):
    sent_with_three_refused(make_memo(), postmark)

    assert len(postmark.calls) == 1 and len(postmark.calls[0]) == 12  # one call took all twelve
    emails = by_recipient(postmark)
    failed = assert_the_refused_failed_and_the_others_have_their_own_ids(emails, lambda e: e["MessageID"])
    for delivery in failed:
        assert "ErrorCode 406" in delivery.status_reason and "marked as inactive" in delivery.status_reason
        assert delivery.developer.email in delivery.status_reason


def test_a_batch_postmark_refuses_whole_fails_each_recipient_with_its_own_reason(postmark, later):
    memo = make_memo()
    make_developers("ru-bad", 3)
    postmark.refuse = {"ru-bad"}
    delivery_send_batch(delivery_ids=queued(memo))
    failed = Delivery.objects.filter(memo=memo).select_related("developer")
    assert {d.status for d in failed} == {"failed"} and later == [] and postmark.accepted == []
    assert all(d.developer.email in d.status_reason and "ErrorCode 406" in d.status_reason for d in failed)


def test_an_email_sent_alone_arrives_and_one_postmark_refuses_alone_fails_with_its_reason(postmark, later):
    """An international address goes in a call of its own (POST /email); Postmark refuses
    an inactive one with HTTP 422 and its reason, which the delivery keeps."""
    memo = make_memo()
    make_developer("cn-idn", "CN", "zh-hans", email="zoë@bücher.example", name="Zoë & <Ünal>")
    make_developer("ru-bad", "RU", email="ru-bad@bücher.example")
    postmark.refuse = {"ru-bad@"}
    delivery_send_batch(delivery_ids=queued(memo))
    assert postmark.calls == [["zoë@xn--bcher-kva.example"], ["ru-bad@xn--bcher-kva.example"]]
    (email,) = postmark.accepted
    zoe = Delivery.objects.get(developer__external_id="cn-idn")
    assert (zoe.status, zoe.provider_message_id) == ("sent", email["MessageID"])
    assert "Zoë &amp; &lt;Ünal&gt;" in email["HtmlBody"] and email["Metadata"] == {"delivery_id": str(zoe.pk)}
    refused = Delivery.objects.get(developer__external_id="ru-bad")
    assert refused.status == "failed" and later == []
    assert "ErrorCode 406" in refused.status_reason and "marked as inactive" in refused.status_reason


def post_webhook(client: Client, event: dict[str, Any], secret: str = WEBHOOK_SECRET) -> int:
    response = client.post(
        "/anymail/postmark/tracking/",
        json.dumps(event),
        content_type="application/json",
        HTTP_AUTHORIZATION=basic_auth(secret),
    )
    return response.status_code


def test_postmarks_delivery_and_bounce_webhooks_move_the_right_deliveries(postmark, client):
    memo = make_memo()
    make_developers("ru-", 4)
    delivery_send_batch(delivery_ids=queued(memo))
    delivered, bounced = "ru-1@example.com", "ru-2@example.com"

    (delivery_event,) = postmark_events(postmark, "Delivery", to={delivered})
    (bounce_event,) = postmark_events(postmark, "Bounce", to={bounced})
    assert post_webhook(client, delivery_event, "hook:wrong") == 400  # not Postmark: nothing moves
    assert post_webhook(client, delivery_event) == 200 and post_webhook(client, bounce_event) == 200

    status = dict(Delivery.objects.values_list("developer__email", "status"))
    assert status == {
        "ru-0@example.com": "sent",
        delivered: "delivered",
        bounced: "bounced",
        "ru-3@example.com": "sent",
    }
    assert Developer.objects.get(email=bounced).email_status == "bounced"
    event = DeliveryEvent.objects.get(delivery__developer__email=bounced)
    assert (event.provider, event.event_type) == ("Postmark", "bounced") and "unable to deliver" in event.description


def test_an_event_without_our_metadata_finds_its_delivery_by_postmarks_message_id(postmark, client):
    memo = make_memo()
    make_developer("ru-0", "RU")
    make_developer("ru-1", "RU")
    delivery_send_batch(delivery_ids=queued(memo))
    (event,) = postmark_events(postmark, "Delivery", to={"ru-0@example.com"})
    del event["Metadata"]
    assert post_webhook(client, event) == 200
    assert dict(Delivery.objects.values_list("developer__email", "status")) == {
        "ru-0@example.com": "delivered",
        "ru-1@example.com": "sent",
    }


def test_postmarks_429_makes_the_call_wait_and_then_everyone_is_sent_once(postmark, later, clock: Clock):
    memo = make_memo()
    make_developers("ru-", 5)
    postmark.throttle = 1
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    assert postmark.requests == 1 and postmark.accepted == []
    assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"}  # waiting, nothing failed
    [(retry_ids, countdown)] = later
    assert sorted(retry_ids) == sorted(ids) and countdown > 0
    waiting = Delivery.objects.get(pk=ids[0])
    assert waiting.not_before is not None and waiting.not_before > timezone.now() and "429" in waiting.status_reason
    clock.move_to(waiting.not_before)
    delivery_send_batch(delivery_ids=retry_ids)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert len(by_recipient(postmark)) == 5 and len(postmark.calls) == 1


@pytest.mark.parametrize("reach", [10_000, 100], ids=["the-range-read-page-by-page", "more-than-the-search-reaches"])
def test_what_a_dead_worker_handed_postmark_is_found_in_its_messages_api_and_everyone_gets_it_once(
    reach, postmark, settings, eager, django_capture_on_commit_callbacks, monkeypatch
):
    """250 developers; the dead worker's call reached Postmark for 130 of them (its answer
    lost) and it died before calling for the other 120. Postmark's Messages API (100 a
    page here) shows the 130: they are recorded sent with the MessageID Postmark gave
    each, the 120 are sent again, and every developer has exactly one email. With more
    of the memo's messages in the range than the search reaches (100 here, 10,000 at
    Postmark), each delivery the dead worker held is asked for by its id in Metadata."""
    from memo_service.backends import postmark as backend
    from memo_service.memos.send import sweeper
    from tests.test_faults import audience
    from tests.test_reconcile import died_holding

    settings.PROVIDER_EVENTS_LAG_SECONDS = 0
    monkeypatch.setattr(backend, "SEARCH_PAGE", 100)
    monkeypatch.setattr(backend, "SEARCH_REACH", reach)
    memo = dispatched(audience(250))
    ids = sorted(Delivery.objects.filter(memo=memo).values_list("pk", flat=True))
    delivery_send_batch(delivery_ids=ids[:130])
    given = dict(Delivery.objects.filter(pk__in=ids[:130]).values_list("pk", "provider_message_id"))
    Delivery.objects.filter(pk__in=ids[:130]).update(provider_message_id="", sent_at=None)  # the answer was lost
    died_holding(memo, ids)
    with django_capture_on_commit_callbacks(execute=True):
        sweeper.deliveries_sweep()
    if reach > 250:
        assert postmark.search_requests == 2  # a full page, then the last
    else:
        assert postmark.search_requests == 1 + 250  # the count, then each delivery the dead worker held
    assert len(by_recipient(postmark)) == 250
    deliveries = Delivery.objects.filter(memo=memo)
    assert set(deliveries.values_list("status", flat=True)) == {"sent"}
    assert {d.pk: d.provider_message_id for d in deliveries if d.pk in given} == given
    assert {d.attempts for d in deliveries if d.pk not in given} == {1}  # sent again once
    assert Memo.objects.get(pk=memo.pk).status == "sent"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_workers_killed_mid_send_through_postmark_are_reconciled_and_everyone_gets_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """1,000 recipients, a worker process SIGKILLed 6 times, the first after Postmark
    took a call and before we recorded it: reconciliation asks Postmark's Messages API,
    so what Postmark has is recorded sent with its own id and the rest is sent again."""
    from tests.test_faults import BROKER, audience, send_while_killing_workers

    if BROKER.startswith("filesystem://"):
        pytest.skip("kombu's filesystem broker leaves a worker idle after its pool processes are killed")
    recipients = 1_000
    memo = audience(recipients)
    with postmark_server() as postmark:
        postmark.delay = 0.3  # a call is on its way a moment: the first kill's hold catches it
        # The sweeper runs here: it sizes tasks for and asks the same Postmark.
        settings.EMAIL_BACKEND = BACKEND
        settings.ANYMAIL = {**settings.ANYMAIL, **postmark.settings()}
        kills = send_while_killing_workers(memo, postmark, tmp_path, monkeypatch, kills=6, backend=BACKEND)

    print(
        f"{kills.made} kills; {postmark.search_requests} Messages API requests; "
        f"{Delivery.objects.filter(memo=memo, attempts__gt=1).count()} deliveries sent again"
    )
    outcome = assert_everyone_got_it_exactly_once(memo, recipients, map(recipient, postmark.accepted))
    ids = {recipient(e): e["MessageID"] for e in postmark.accepted}
    assert len(outcome.deliveries) == recipients and postmark.search_requests  # reconciliation asked Postmark
    assert set(outcome.per_recipient) == set(outcome.deliveries)
    assert all(d.provider_message_id == ids[a] for a, d in outcome.deliveries.items())
