"""Sending through SendGrid: anymail's real SendGrid backend (ours, batched) talking HTTP
to a loopback SendGrid (tests/loopback_sendgrid.py), judged by the emails SendGrid would
deliver and by each developer's delivery."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memo_service.developers.models import Developer
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import WEBHOOK_SECRET, Clock, make_developer, make_memo
from tests.loopback_sendgrid import (
    API_KEY,
    BACKEND,
    Delivered,
    FiftyAtATime,
    SendGridProvider,
    sendgrid_events,
    sendgrid_events_post,
    sendgrid_server,
)
from tests.provider_cases import (
    SUBSTITUTABLE,
    TESTS_A_VALUE,
    TRICKY,
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
from tests.test_faults import ON_FILESYSTEM_BROKER, audience, send_while_killing_workers

pytestmark = [
    pytest.mark.django_db,
    # anymail warns on every SendGrid backend and webhook view that it no longer supports SendGrid.
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

BATCH = 1000  # SendGrid's personalizations in one call


@pytest.fixture
def sendgrid(settings: Any) -> Iterator[SendGridProvider]:
    """Our SendGrid backend, talking HTTP to a loopback SendGrid."""
    with sendgrid_server() as provider:
        settings.EMAIL_BACKEND = BACKEND
        settings.ANYMAIL = {
            "SENDGRID_API_KEY": API_KEY,
            "SENDGRID_API_URL": provider.url,
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        yield provider


def by_recipient(sendgrid: SendGridProvider) -> dict[str, Delivered]:
    return one_each(sendgrid.delivered, lambda e: e.to)


def assert_each_got_their_full_render(memo: Memo, emails: dict[str, Delivered]) -> None:
    """What each developer got is, to the character, a full render of the memo for them,
    with their own link and their own delivery's ids."""
    renderer = MemoRenderer(memo)
    links: set[str] = set()
    for n, delivery in enumerate(Delivery.objects.filter(memo=memo).select_related("developer").order_by("id")):
        got = emails[delivery.developer.email]
        # Reading a link costs a few queries: every 50th is read, all are distinct.
        links.add(assert_full_render(renderer, delivery.developer, got.subject, got.html, got.text, n % 50 == 0))
        assert got.custom_args["delivery_id"] == str(delivery.pk) and got.categories == [f"memo-{memo.pk}"]
        assert (delivery.status, delivery.provider_message_id) == ("sent", got.custom_args["anymail_id"])
    assert len(links) == len(emails)


@pytest.mark.parametrize("template", [SUBSTITUTABLE, TESTS_A_VALUE], ids=["substitutable", "tests-a-value"])
def test_a_memo_to_two_and_a_half_batches_arrives_once_each_in_three_calls_exactly_as_rendered(
    sendgrid, template, eager, django_capture_on_commit_callbacks
):
    developers_named_trickily(2_500, "sg")
    memo = sent_through_the_admin(make_memo(**template), django_capture_on_commit_callbacks)

    assert len(sendgrid.calls) == math.ceil(2_500 / BATCH) and max(map(len, sendgrid.calls)) == BATCH
    emails = by_recipient(sendgrid)
    assert len(emails) == 2_500
    assert_each_got_their_full_render(memo, emails)
    some = emails["sg-00007@example.com"]
    assert "&amp; &lt;Sons&gt;" in some.html and "&amp;amp;" not in some.html
    assert 'O\'Neil & <Sons> "7"' in some.text and some.name == 'O\'Neil & <Sons> "7"'
    texts = [next(c["value"] for c in body["content"] if c["type"] == "text/plain") for body in sendgrid.bodies]
    if template is TESTS_A_VALUE:
        assert some.text.startswith("Not China, O'Neil")
        assert set(texts) == {"[[memo:text]]"}  # each one's whole text, in their substitutions
    else:
        assert all(t.count("will be blocked") == 1 and "[[memo:v0]]" in t for t in texts)  # the memo once a call
    assert len({d.provider_message_id for d in Delivery.objects.all()}) == 2_500  # each its own
    assert Memo.objects.get(pk=memo.pk).status == "sent"


def test_a_memo_too_long_for_sendgrids_substitutions_arrives_whole_one_email_per_call(sendgrid):
    """A memo that tests a value travels as each one's whole email; past SendGrid's
    10,000 bytes of substitutions a recipient, each goes in a call of its own."""
    memo = make_memo(
        html_body="{% if developer.country == 'CN' %}<p>China</p>{% endif %}" + "<p>Long paragraph.</p>" * 600,
        text_body="Dear {{ developer.name|upper }}, " + "Long paragraph. " * 100,
    )
    for i in range(6):
        make_developer(f"ru-long{i}", "RU", name=TRICKY.format(i))
    delivery_send_batch(delivery_ids=queued(memo))
    assert len(sendgrid.calls) == 6 and {len(c) for c in sendgrid.calls} == {1}
    assert_each_got_their_full_render(memo, by_recipient(sendgrid))
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}


def test_a_name_that_looks_like_a_merge_field_reaches_its_developer_as_written(sendgrid):
    """SendGrid substitutes inside substituted values too: the one whose value carries
    our merge field's mark goes alone, without substitutions; the others still batch."""
    memo = make_memo(countries=("RU",))
    make_developers("ru-", 7)
    make_developer("ru-odd", "RU", name="[[memo:html]] [[memo:v0]]")
    delivery_send_batch(delivery_ids=queued(memo))
    emails = by_recipient(sendgrid)
    assert emails["ru-odd@example.com"].text.startswith("Dear [[memo:html]] [[memo:v0]],")
    assert_each_got_their_full_render(memo, emails)
    assert ["ru-odd@example.com"] in sendgrid.calls and max(map(len, sendgrid.calls)) > 1


def test_a_developer_named_with_a_comma_still_gets_the_memo(sendgrid):
    """SendGrid refuses a recipient's name with a comma or a semicolon; the name goes without."""
    memo = make_memo(countries=("RU",))
    make_developer("ru-1", "RU", name="Petrova, Olga; PhD")
    make_developer("ru-2", "RU")
    delivery_send_batch(delivery_ids=queued(memo))
    emails = by_recipient(sendgrid)
    assert emails["ru-1@example.com"].name == "Petrova Olga PhD"
    assert emails["ru-1@example.com"].text.startswith("Dear Petrova, Olga; PhD,")  # the memo says it as it is
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}


def test_recipients_sendgrid_refuses_fail_with_its_reason_and_the_others_are_sent_once_with_their_own_ids(
    sendgrid, later
):
    """SendGrid refuses a whole call for one address: halved until each refusal is its
    recipient's alone, the rest sent once, each with its own message id."""
    sent_with_three_refused(make_memo(countries=("RU",)), sendgrid)

    emails = by_recipient(sendgrid)
    failed = assert_the_refused_failed_and_the_others_have_their_own_ids(emails, lambda e: e.custom_args["anymail_id"])
    assert all("Does not contain a valid address" in d.status_reason and "400" in d.status_reason for d in failed)
    assert later == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_sendgrids_tracking_events_move_each_developers_own_delivery(live_server, sendgrid):
    """SendGrid's Event Webhook, through anymail's own tracking view: each event finds its
    delivery by our id in custom_args, or else by anymail's message id for the recipient."""
    memo = make_memo(countries=("RU",))
    make_developers("ru-", 4)
    delivery_send_batch(delivery_ids=queued(memo))
    assert len(sendgrid.calls) == 1
    url = live_server.url + "/anymail/sendgrid/tracking/"

    assert (
        sendgrid_events_post(url, sendgrid_events(sendgrid, "delivered", {"ru-0@example.com"}), WEBHOOK_SECRET) == 200
    )
    bounced = sendgrid_events(sendgrid, "bounce", {"ru-1@example.com"})
    assert sendgrid_events_post(url, bounced, WEBHOOK_SECRET) == 200
    without_our_id = [{k: v for k, v in e.items() if k != "delivery_id"} for e in sendgrid_events(sendgrid)]
    ru_2 = [e for e in without_our_id if e["email"] == "ru-2@example.com"]
    assert sendgrid_events_post(url, ru_2, WEBHOOK_SECRET) == 200

    status = dict(Delivery.objects.values_list("developer__external_id", "status"))
    assert status == {"ru-0": "delivered", "ru-1": "bounced", "ru-2": "delivered", "ru-3": "sent"}
    assert Developer.objects.get(external_id="ru-1").email_status == "bounced"
    with pytest.raises(Exception, match="400"):  # not SendGrid: the webhook's password is wrong
        sendgrid_events_post(url, sendgrid_events(sendgrid, "delivered"), "hook:wrong")
    assert Delivery.objects.get(developer__external_id="ru-3").status == "sent"


def test_sendgrids_throttling_answer_is_waited_out_and_then_everyone_is_sent_once(sendgrid, later, clock: Clock):
    memo = make_memo(countries=("RU",))
    make_developers("ru-", 5)
    sendgrid.throttle, sendgrid.reset_in = 1, 30
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    [(retry_ids, countdown)] = later
    assert sorted(retry_ids) == sorted(ids) and 28 <= countdown <= 31  # until SendGrid's window resets
    waiting = Delivery.objects.filter(pk__in=ids)
    assert {d.status for d in waiting} == {"queued"} and sendgrid.delivered == []  # nothing failed
    assert all("429" in d.status_reason for d in waiting)
    not_before = max(d.not_before for d in waiting if d.not_before)
    clock.move_to(not_before)
    delivery_send_batch(delivery_ids=retry_ids)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert len(by_recipient(sendgrid)) == 5 and [s for _, s in sendgrid.log] == [429, 202]


@pytest.mark.e2e
@ON_FILESYSTEM_BROKER
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_workers_killed_mid_send_through_sendgrid_lose_nobody_and_flag_every_possible_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """SendGrid has no idempotency key and cannot be asked what it took: a worker killed
    while SendGrid held its call leaves that call's deliveries outcome_unknown. Everyone
    SendGrid has was sent it once, a recipient sent twice is flagged, nobody is lost."""
    recipients = 1_000
    memo = audience(recipients)
    with sendgrid_server() as provider:
        provider.backend = f"{FiftyAtATime.__module__}.{FiftyAtATime.__name__}"
        settings.EMAIL_BACKEND = provider.backend  # send_memo and the sweeper size and judge as the workers
        kills = send_while_killing_workers(memo, provider, tmp_path, monkeypatch, kills=6)

    outcome = assert_nobody_lost_and_sent_means_once(memo, recipients, (e.to for e in provider.delivered))
    print(
        f"{len(outcome.unknown)} flagged, {len(outcome.duplicates)} duplicates, {len(provider.calls)} calls, "
        f"{kills.made} kills"
    )
    assert all(outcome.deliveries[a].status == "outcome_unknown" for a in outcome.duplicates)
    # A call's deliveries are claimed with it: a kill leaves at most one call's unknown.
    assert len(outcome.unknown) <= kills.made * FiftyAtATime.merge_batch_size
    # The kill that landed between SendGrid's acceptance and our commit left its call flagged.
    assert any(outcome.per_recipient[a] for a in outcome.unknown)
