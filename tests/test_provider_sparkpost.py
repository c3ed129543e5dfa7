"""Sending through SparkPost: anymail's real SparkPost backend (ours,
memo_service.backends.sparkpost) talking HTTP to a loopback SparkPost
(tests/loopback_sparkpost.py) that applies SparkPost's template language as SparkPost
documents it, so each email it would deliver is compared with a full render."""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from memo_service.backends.sparkpost import EmailBackend
from memo_service.developers.models import Developer
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import WEBHOOK_SECRET, Clock, make_memo
from tests.loopback_provider import basic_auth
from tests.loopback_sparkpost import (
    BACKEND,
    Delivered,
    SmallBatches,
    SparkPostProvider,
    sparkpost_events,
    sparkpost_server,
)
from tests.provider_cases import (
    assert_full_render,
    assert_nobody_lost_and_sent_means_once,
    developers_in_bulk,
    requests_of,
    sent_in_send_tasks,
)
from tests.test_faults import ON_FILESYSTEM_BROKER, audience, send_while_killing_workers

pytestmark = pytest.mark.django_db

# Names that would show double escaping (or none) in the HTML, and one that looks like
# SparkPost's own template language.
NAMES = ["Tom & Jerry <Co>", 'Say "hi"', "O'Brien", "Ann {{address.email}}", "Plain Name"]


@pytest.fixture
def sparkpost(settings: Any) -> Iterator[SparkPostProvider]:
    with sparkpost_server() as provider:
        settings.EMAIL_BACKEND = BACKEND
        settings.ANYMAIL = {**provider.settings(), "WEBHOOK_SECRET": WEBHOOK_SECRET}
        yield provider


def developers_named(n: int, prefix: str = "dev") -> list[Developer]:
    """n developers in RU (English), each with one of NAMES and a number."""
    return developers_in_bulk(n, prefix, lambda i: f"{NAMES[i % len(NAMES)]} {i}", language="en")


def sent(memo: Memo) -> list[int]:
    """The memo dispatched and sent as the workers send it: one send task
    (delivery_send_batch) per send_batch_size() deliveries."""
    return sent_in_send_tasks(memo, lambda ids: delivery_send_batch(delivery_ids=ids))


def statuses(memo: Memo) -> dict[str, int]:
    return dict(collections.Counter(Delivery.objects.filter(memo=memo).values_list("status", flat=True)))


def assert_each_got_their_full_render(memo: Memo, sparkpost: SparkPostProvider) -> None:
    """Every developer got exactly one email, and it is, to the character, the full
    render of the memo for them (their own link), carrying their own delivery id."""
    by_address = collections.defaultdict(list)
    for email in sparkpost.accepted:
        by_address[email.address].append(email)
    renderer = MemoRenderer(memo)
    deliveries = Delivery.objects.filter(memo=memo).select_related("developer")
    assert sorted(by_address) == sorted(d.developer.email for d in deliveries)
    for delivery in deliveries:
        [got] = by_address[delivery.developer.email]
        assert_full_render(renderer, delivery.developer, got.subject, got.html, got.text)
        assert got.metadata == {"delivery_id": str(delivery.pk)}
        assert delivery.status == "sent" and delivery.provider_message_id == got.transmission_id


def test_a_memo_reaches_each_developer_once_in_calls_of_two_thousand_each_email_its_full_render(sparkpost):
    n = EmailBackend.merge_batch_size * 5 // 2
    developers_named(n)
    memo = make_memo(countries=("RU",))
    sent(memo)
    assert len(sparkpost.calls) == math.ceil(n / EmailBackend.merge_batch_size) == 3
    assert sorted(map(len, sparkpost.calls)) == [1000, 2000, 2000]
    assert_each_got_their_full_render(memo, sparkpost)
    # Escaped once, by us: SparkPost inserted our escaped value as it is.
    tom = next(e for e in sparkpost.accepted if e.address == "dev-00000@example.com")
    assert "Tom &amp; Jerry &lt;Co&gt; 0" in tom.html and "Tom & Jerry <Co> 0" in tom.text
    # The memo travelled once a call, with only each recipient's values.
    assert all(body.count(b"will be blocked") == 2 for body in sparkpost.bodies)  # html and text


def test_a_memo_that_tests_a_value_reaches_each_developer_as_their_whole_email(sparkpost):
    developers_named(30)
    memo = make_memo(
        countries=("RU",),
        html_body="<p>{% if developer.name.startswith('Tom') %}Hi Tom{% else %}Dear {{ developer.name }}{% endif %}</p>",
    )
    sent(memo)
    assert len(sparkpost.calls) == 1
    assert_each_got_their_full_render(memo, sparkpost)
    assert json.loads(sparkpost.bodies[0])["content"]["html"] == "{{{html}}}"


@pytest.mark.parametrize(
    "shown",
    ["{{token}} and {{ name }}", "{{{h0}}} and {{{html}}}"],
    ids=["in-the-memo-sent-once", "in-each-whole-email"],
)
def test_a_memo_whose_own_text_shows_braces_arrives_as_written(sparkpost, shown):
    """SparkPost would read "{{x}}" in the memo's own text as its template language."""
    developers_named(6)
    quoted = "{{ '" + shown.replace("'", "") + "' }}"
    memo = make_memo(
        countries=("RU",),
        text_body="Dear {{ developer.name }},\nset " + quoted + " in your config {",
        html_body="<p>Dear {{ developer.name }}: set " + quoted + " {</p><p>{{ developer.name }}</p>",
    )
    sent(memo)
    assert_each_got_their_full_render(memo, sparkpost)
    assert f"set {shown} in your config {{" in sparkpost.accepted[0].text


def test_recipients_sparkpost_refuses_fail_with_its_reason_and_the_others_are_sent_once(sparkpost, later):
    """SparkPost refuses a whole transmission (422) for an address it will not take,
    naming it: the call is halved until the refusal is down to that recipient."""
    developers_named(10)
    sparkpost.refuse = {"dev-00002@example.com", "dev-00007@example.com"}
    memo = make_memo(countries=("RU",))
    ids = sent(memo)
    delivery_send_batch(delivery_ids=ids)  # a rerun changes nothing
    failed = Delivery.objects.filter(memo=memo, status="failed").select_related("developer")
    assert sorted(d.developer.email for d in failed) == sorted(sparkpost.refuse)
    assert all("Invalid recipient address.email: " + d.developer.email in d.status_reason for d in failed)
    assert all("422" in d.status_reason for d in failed)
    addresses = [e.address for e in sparkpost.accepted]
    assert len(addresses) == len(set(addresses)) == 8 and later == []
    # Each delivery keeps the transmission id of the call that carried it.
    carried = {e.address: e.transmission_id for e in sparkpost.accepted}
    for delivery in Delivery.objects.filter(memo=memo, status="sent").select_related("developer"):
        assert delivery.provider_message_id == carried[delivery.developer.email]
    assert len(set(carried.values())) > 1  # several calls, each its own id


def test_a_transmission_taken_with_unnamed_rejections_is_outcome_unknown_until_sparkpost_events_settle_it(
    sparkpost, client, later
):
    """SparkPost's documented partial answer counts the recipients it rejected without
    naming them: nobody of that call is recorded sent or failed on a guess, nobody is
    sent twice, and SparkPost's delivery events (our delivery id in rcpt_meta) settle
    the recipients it took."""
    developers_named(8)
    sparkpost.refuse, sparkpost.partial = {"dev-00003@example.com"}, True
    memo = make_memo(countries=("RU",))
    ids = sent(memo)
    delivery_send_batch(delivery_ids=ids)  # nothing is sent again
    assert statuses(memo) == {"outcome_unknown": 8} and len(sparkpost.accepted) == 7 and later == []
    reason = Delivery.objects.filter(memo=memo).values_list("status_reason", flat=True)[0]
    assert "took 7 of the transmission's 8 recipients and rejected 1 without naming them" in reason
    assert post_events(client, sparkpost.accepted, "delivery").status_code == 200
    assert statuses(memo) == {"delivered": 7, "outcome_unknown": 1}
    assert Delivery.objects.get(memo=memo, status="outcome_unknown").developer.email == "dev-00003@example.com"


@pytest.mark.parametrize(
    "name, email",
    [("Wang Wei", "cn-1@example.com"), ('Smith, "Pat"', "pat@example.com"), ("Zoë", "o'brien+memo@example.com")],
)
def test_a_transmission_is_what_anymail_itself_makes_of_the_addresses_as_text(name, email):
    """Ours takes anymail's EmailAddress objects as they are (no second parse): the
    request must be the one anymail's own backend makes from the addresses as text."""
    from anymail.backends import sparkpost as anymails

    from memo_service.memos.send.addresses import recipient_address

    addresses = [recipient_address(name, email), recipient_address("Other", "other@example.com")]
    ours, anymails_own = requests_of(
        EmailBackend(api_key="k"),
        anymails.EmailBackend(api_key="k"),
        addresses,
        "https://x/",
        lambda a: {"v0": f"Hi {a.display_name}", "v1": "x"},
        subject="{{{v0}}}",
        body="{{{v1}}}",
    )
    assert ours == anymails_own


def post_events(client: Any, delivered: list[Delivered], event: str, **fields: Any) -> Any:
    """SparkPost's webhook, through anymail's own tracking view for SparkPost."""
    body = json.dumps(sparkpost_events(delivered, event, **fields))
    return client.post(
        "/anymail/sparkpost/tracking/",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=basic_auth(WEBHOOK_SECRET),
    )


def test_sparkpost_tracking_events_move_the_delivery_they_name(sparkpost, client):
    developers_named(5)
    memo = make_memo(countries=("RU",))
    sent(memo)
    assert len(sparkpost.calls) == 1  # one transmission id for all five: the events find them by delivery id
    first, second, *rest = sorted(sparkpost.accepted, key=lambda e: e.address)
    assert post_events(client, [first, *rest], "delivery").status_code == 200
    bounce = {"bounce_class": "10", "raw_reason": "550 5.1.1 mailbox does not exist"}
    assert post_events(client, [second], "bounce", **bounce).status_code == 200
    by_email = {d.developer.email: d for d in Delivery.objects.filter(memo=memo).select_related("developer")}
    assert by_email[second.address].status == "bounced"
    assert by_email[second.address].developer.email_status == "bounced"
    assert {by_email[e.address].status for e in [first, *rest]} == {"delivered"}
    # A replayed webhook changes nothing more.
    assert post_events(client, [second], "delivery").status_code == 200
    assert Delivery.objects.get(pk=by_email[second.address].pk).status == "bounced"


@pytest.mark.parametrize(
    "status, answer",
    [
        (429, {"errors": [{"message": "Too many requests"}]}),
        (420, {"errors": [{"message": "Exceed Sending Limit (hourly)", "code": "2101"}]}),
    ],
    ids=["too-many-requests", "sending-limit"],
)
def test_sparkpost_saying_slow_down_makes_the_call_wait_and_go_again_with_nothing_failed(
    sparkpost, later, clock: Clock, status, answer
):
    developers_named(4)
    memo = make_memo(countries=("RU",))
    sparkpost.failures.append((status, answer))
    ids = sent(memo)
    assert statuses(memo) == {"queued": 4} and sparkpost.accepted == []
    [(retry_ids, countdown)] = later
    assert sorted(retry_ids) == ids and countdown > 0
    not_before = max(d.not_before for d in Delivery.objects.filter(memo=memo) if d.not_before)
    assert not_before > timezone.now()
    clock.move_to(not_before)  # the wait is over
    delivery_send_batch(delivery_ids=retry_ids)
    assert statuses(memo) == {"sent": 4} and len(sparkpost.accepted) == 4 and sparkpost.requests == 2


@pytest.mark.e2e
@ON_FILESYSTEM_BROKER
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_workers_killed_mid_send_through_sparkpost_lose_nobody_and_flag_every_possible_duplicate(
    tmp_path, monkeypatch, settings
):
    """About a thousand recipients, a worker process SIGKILLed 6 times, one of them after
    SparkPost took a transmission and before we recorded it. SparkPost can neither be
    asked nor deduplicate: everyone it has was sent it once where we say "sent", and
    everyone we cannot vouch for is flagged "outcome unknown" (at most one extra copy),
    never lost."""
    recipients = 1_000
    small = "tests.loopback_sparkpost.SmallBatches"  # calls of 100: ten calls for the kills
    memo = audience(recipients)
    settings.EMAIL_BACKEND = small  # send_memo sizes the send tasks for it, as in production
    with sparkpost_server() as provider:
        settings.ANYMAIL = {**settings.ANYMAIL, **provider.settings()}
        provider.backend = small
        kills = send_while_killing_workers(memo, provider, tmp_path, monkeypatch, kills=6)
    outcome = assert_nobody_lost_and_sent_means_once(memo, recipients, (e.address for e in provider.accepted))
    print(f"{kills.made} kills; {len(outcome.unknown)} deliveries flagged; {len(outcome.duplicates)} duplicates")
    assert outcome.unknown, "a kill between SparkPost's acceptance and our commit leaves its call unknown"
    assert all(outcome.deliveries[a].status == "outcome_unknown" for a in outcome.duplicates)
    assert len(outcome.unknown) <= kills.made * SmallBatches.merge_batch_size
