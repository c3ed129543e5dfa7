"""Sending through Brevo: anymail's real Brevo backend (ours, memo_service.backends.brevo)
talking HTTP to a loopback Brevo (tests/loopback_brevo.py), judged by the emails Brevo
would deliver and by what each delivery records."""

from __future__ import annotations

import collections
import datetime as dt
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client

from memo_service.backends.brevo import EmailBackend
from memo_service.developers.models import Developer
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import WEBHOOK_SECRET, Clock, make_developer, make_memo
from tests.loopback_brevo import BREVO_KEY, BrevoProvider, TenCallsAThousand, brevo_events_post, brevo_server
from tests.provider_cases import (
    assert_everyone_got_it_exactly_once,
    assert_full_render,
    developers_in_bulk,
    make_developers,
    queued,
    sent_through_the_admin,
)
from tests.test_faults import ON_FILESYSTEM_BROKER, audience, send_while_killing_workers

pytestmark = pytest.mark.django_db

BACKEND = "memo_service.backends.brevo.EmailBackend"
TRACKING_URL = "/anymail/brevo/tracking/"
# Every character HTML escapes: escaped twice, "&amp;amp;" would show.
AWKWARD = "& < > \" '"


@pytest.fixture
def brevo(settings: Any) -> Iterator[BrevoProvider]:
    with brevo_server() as provider:
        settings.EMAIL_BACKEND = BACKEND
        settings.ANYMAIL = {"BREVO_API_KEY": BREVO_KEY, "BREVO_API_URL": provider.url, "WEBHOOK_SECRET": WEBHOOK_SECRET}
        yield provider


def russians(n: int) -> None:
    """n developers in RU (English), each named with every character HTML escapes."""
    developers_in_bulk(n, "ru", lambda i: f"Dev {i} {AWKWARD}")


def tracking_post(client: Client) -> Callable[[bytes, str], int]:
    """What brevo_events_post posts with: a body to anymail's Brevo tracking view, its
    status code."""

    def post(body: bytes, auth: str) -> int:
        return client.post(TRACKING_URL, body, content_type="application/json", HTTP_AUTHORIZATION=auth).status_code

    return post


def assert_each_email_is_the_full_render(memo: Memo, provider: BrevoProvider) -> None:
    """Every email Brevo would deliver is, to the character, a full render of the memo for
    its developer, with their own link and their own delivery id for the webhooks."""
    by_to = {email.to: email for email in provider.delivered}
    renderer = MemoRenderer(memo)
    for delivery in Delivery.objects.filter(memo=memo).select_related("developer"):
        got = by_to[delivery.developer.email]
        assert got.name == delivery.developer.name
        assert_full_render(renderer, delivery.developer, got.subject, got.html, got.text)
        assert got.headers["X-Mailin-custom"] == f'{{"delivery_id": "{delivery.pk}"}}'
        assert delivery.provider_message_id == got.message_id  # its own, not the call's


@pytest.mark.parametrize(
    "text_body",
    [
        "Dear {{ developer.name }},\nTraffic from {{ developer.country_name }} will be blocked.",
        "{% if developer.country == 'CN' %}China{% else %}Not China{% endif %}, {{ developer.name }}",
    ],
    ids=["substitutable", "tests-a-value"],
)
def test_a_memo_reaches_each_developer_once_in_calls_of_a_thousand_each_their_own_full_email(
    brevo, text_body, eager, django_capture_on_commit_callbacks
):
    recipients = 2_500  # two and a half calls
    russians(recipients)
    memo = sent_through_the_admin(make_memo(text_body=text_body), django_capture_on_commit_callbacks)

    per_recipient = collections.Counter(email.to for email in brevo.delivered)
    assert len(per_recipient) == recipients and set(per_recipient.values()) == {1}
    assert len(brevo.calls) == math.ceil(recipients / EmailBackend.merge_batch_size) == 3
    assert sorted(map(len, brevo.calls)) == [500, 1000, 1000]
    assert_each_email_is_the_full_render(memo, brevo)
    # Escaped once, as the render escapes it, and no more.
    assert "Dev 7 &amp; &lt; &gt; &#34; &#39;" in next(
        e.html for e in brevo.delivered if e.to == "ru-00007@example.com"
    )
    # Nothing for Brevo's template language to fill: each version is a whole email.
    assert not any("params" in v for call in brevo.bodies for v in call["messageVersions"])
    memo.refresh_from_db()
    assert memo.status == "sent"
    assert set(Delivery.objects.filter(memo=memo).values_list("status", flat=True)) == {"sent"}


def test_addresses_brevo_refuses_fail_with_its_reason_and_everybody_else_gets_it_once(brevo, later):
    """Brevo refuses a whole call for one address: it is halved until each refusal is
    down to its own recipient."""
    memo = make_memo()
    for i in range(9):
        make_developer(f"ru-ok{i}", "RU", name=f"Ok {i} {AWKWARD}")
    refused = {f"ru-bad{i}@example.com" for i in range(3)}
    for address in refused:
        make_developer(address.split("@")[0], "RU")
    brevo.refuse = refused
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    delivery_send_batch(delivery_ids=ids)  # a rerun changes nothing

    failed = Delivery.objects.filter(memo=memo, status="failed").select_related("developer")
    assert {d.developer.email for d in failed} == refused
    assert all("email is not valid" in d.status_reason and "400" in d.status_reason for d in failed)
    per_recipient = collections.Counter(email.to for email in brevo.delivered)
    assert len(per_recipient) == 9 and set(per_recipient.values()) == {1} and refused.isdisjoint(per_recipient)
    sent = Delivery.objects.filter(memo=memo, status="sent").select_related("developer")
    message_ids = {email.to: email.message_id for email in brevo.delivered}
    assert {d.developer.email: d.provider_message_id for d in sent} == message_ids
    assert len(set(message_ids.values())) == 9  # each its own
    assert later == []


def test_brevos_delivered_and_bounced_webhooks_move_the_right_deliveries(brevo, client: Client):
    memo = make_memo()
    make_developers("ru-", 4)
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    assert len(brevo.calls) == 1

    post = tracking_post(client)
    assert brevo_events_post(brevo, post, WEBHOOK_SECRET, "delivered", to={"ru-0@example.com"}) == [200]
    assert brevo_events_post(brevo, post, WEBHOOK_SECRET, "hard_bounce", to={"ru-1@example.com"}) == [200]
    assert brevo_events_post(brevo, post, "hook:wrong", "delivered", to={"ru-2@example.com"}) == [400]
    statuses = dict(Delivery.objects.filter(memo=memo).values_list("developer__external_id", "status"))
    assert statuses == {"ru-0": "delivered", "ru-1": "bounced", "ru-2": "sent", "ru-3": "sent"}
    assert Developer.objects.get(external_id="ru-1").email_status == "bounced"


def test_a_webhook_without_our_metadata_finds_its_delivery_by_brevos_message_id(brevo, client: Client):
    memo = make_memo()
    make_developers("ru-", 3)
    delivery_send_batch(delivery_ids=queued(memo))
    for email in brevo.delivered:
        del email.headers["X-Mailin-custom"]  # as if the header had been lost on the way

    post = tracking_post(client)
    brevo_events_post(brevo, post, WEBHOOK_SECRET, "delivered", to={"ru-1@example.com"})
    statuses = dict(Delivery.objects.filter(memo=memo).values_list("developer__external_id", "status"))
    assert statuses == {"ru-0": "sent", "ru-1": "delivered", "ru-2": "sent"}


def test_brevos_429_makes_the_call_wait_its_reset_and_then_everyone_is_sent(brevo, later, clock: Clock):
    memo = make_memo()
    make_developers("ru-", 5)
    brevo.throttle, brevo.reset = 1, 30
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    assert brevo.delivered == [] and brevo.requests == 1
    [(retry_ids, countdown)] = later
    assert sorted(retry_ids) == sorted(ids) and countdown >= 30  # Brevo's x-sib-ratelimit-reset
    assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"}  # nothing failed
    not_before = Delivery.objects.values_list("not_before", flat=True).first()
    assert not_before is not None
    clock.move_to(not_before)
    delivery_send_batch(delivery_ids=retry_ids)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert len(brevo.delivered) == 5 and brevo.requests == 2


def test_a_lost_answer_is_sent_again_under_the_same_key_and_nobody_gets_it_twice(brevo, later, settings, clock):
    """Brevo took the call but its answer never came (read timeout): the call is made
    again with the same idempotency key, and Brevo answers with the first call's ids."""
    memo = make_memo()
    make_developers("ru-", 5)
    ids = queued(memo)
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.5}
    brevo.hold = 1
    delivery_send_batch(delivery_ids=ids)
    brevo.held.get(timeout=5)[1].set()  # the answer goes, to nobody
    assert len(brevo.delivered) == 5 and set(Delivery.objects.values_list("status", flat=True)) == {"queued"}
    [(retry_ids, _)] = later
    clock.move_to(max(d for d in Delivery.objects.values_list("not_before", flat=True) if d))
    delivery_send_batch(delivery_ids=retry_ids)
    assert len(brevo.delivered) == 5 and len(brevo.repeated) == 1
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    message_ids = {email.to: email.message_id for email in brevo.delivered}
    sent = Delivery.objects.select_related("developer")
    assert {d.developer.email: d.provider_message_id for d in sent} == message_ids


def test_a_call_left_unanswered_past_brevos_fifteen_minutes_is_not_sent_again_but_flagged(brevo, eager, clock):
    """Brevo forgets an idempotency key after 15 minutes: a delivery left mid-call longer
    than that could be sent twice, so it is flagged "outcome unknown" (Brevo cannot be
    asked what it took) and nothing goes to Brevo."""
    from memo_service.memos.send.reconcile import UNKNOWN_REASON
    from memo_service.memos.send.sweeper import SENDING_GRACE, deliveries_sweep
    from tests.conftest import sent_delivery

    memo = make_memo()
    developer = make_developer("ru-1", "RU")
    delivery = sent_delivery(memo, developer, "sending")  # claimed for its call, which never ended
    assert SENDING_GRACE > EmailBackend.idempotency_window
    claimed = delivery.status_changed_at
    assert claimed is not None
    clock.move_to(claimed + SENDING_GRACE + dt.timedelta(seconds=1))
    deliveries_sweep()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.status_reason) == ("outcome_unknown", UNKNOWN_REASON)
    assert brevo.requests == 0


@pytest.mark.e2e
@ON_FILESYSTEM_BROKER
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_workers_killed_mid_send_through_brevo_leave_everyone_with_exactly_one_email(tmp_path, monkeypatch, settings):
    """1,000 recipients in calls of 100, a worker process SIGKILLed 6 times, some of them
    after Brevo took a call and before we recorded it. Within Brevo's 15 minutes a dead
    worker's call is made again under the same idempotency key: Brevo answers it with
    the first call's ids, so everyone gets exactly one email and every delivery is sent."""
    recipients = 1_000
    memo = audience(recipients)
    backend = f"{TenCallsAThousand.__module__}.{TenCallsAThousand.__name__}"
    settings.EMAIL_BACKEND = backend  # send_memo sizes the tasks, the sweeper trusts the key
    with brevo_server() as provider:
        provider.backend = backend
        kills = send_while_killing_workers(memo, provider, tmp_path, monkeypatch, kills=6)

    print(
        f"{len(set(provider.repeated))} calls repeated under their key after {kills.made} kills "
        f"({kills.between_acceptance_and_commit} between acceptance and commit)"
    )
    outcome = assert_everyone_got_it_exactly_once(memo, recipients, (email.to for email in provider.delivered))
    message_ids = {email.to: email.message_id for email in provider.delivered}
    assert all(d.provider_message_id == message_ids[a] for a, d in outcome.deliveries.items())
    assert kills.between_acceptance_and_commit <= len(set(provider.repeated)) <= kills.made
