"""Sending through Resend in batches (memo_service.backends.resend over anymail's real
Resend backend), judged by what a loopback Resend (tests/loopback_resend.py) delivered."""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from anymail.utils import parse_single_address
from django.core import signing
from django.db.models import Max
from django.test import Client

from memo_service.developers.models import Developer
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.models import Delivery, DeliveryEvent, Memo
from memo_service.memos.tasks import send_batch
from tests.conftest import WEBHOOK_SECRET, Clock, make_developer, make_memo, wait_for
from tests.loopback_provider import basic_auth
from tests.loopback_resend import ResendBatchProvider, recipient, resend_batch_server, resend_webhook
from tests.provider_cases import assert_everyone_got_it_exactly_once, assert_full_render, sent_in_send_tasks
from tests.test_faults import ON_FILESYSTEM_BROKER, audience, send_while_killing_workers

BACKEND = "memo_service.backends.resend.EmailBackend"
# Names a double escape (or none) would show in the HTML.
AWKWARD = "Zoë & <Co> \"Q\" 'Dev'"


@pytest.fixture
def resend(settings: Any) -> Iterator[ResendBatchProvider]:
    """Our Resend backend, talking HTTP to a loopback Resend."""
    with resend_batch_server() as provider:
        settings.EMAIL_BACKEND = BACKEND
        settings.ANYMAIL = {**provider.settings(), "WEBHOOK_SECRET": WEBHOOK_SECRET}
        yield provider


def audience_in_france(n: int, **memo: Any) -> Memo:
    for i in range(n):
        make_developer(f"fr-{i:03d}", "FR", name=f"{AWKWARD} {i}")
    return make_memo(countries=("FR",), **memo)


def sent(memo: Memo) -> list[int]:
    """The memo dispatched, and its send tasks run as a worker runs them."""
    return sent_in_send_tasks(memo, send_batch)


def metadata(email: dict[str, Any]) -> dict[str, str]:
    """What anymail put in the email's X-Metadata header (Resend hands it back in its webhooks)."""
    return dict(json.loads(email["headers"]["X-Metadata"]))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text_body",
    [None, "{% if developer.country == 'FR' %}France, {{ developer.name }}{% else %}Elsewhere{% endif %}"],
    ids=["substitutable", "tests-a-value"],
)
def test_a_memo_to_two_and_a_half_batches_arrives_once_per_developer_each_a_full_render(
    resend: ResendBatchProvider, text_body: str | None
) -> None:
    n = 250
    memo = audience_in_france(n, **({"text_body": text_body} if text_body else {}))
    sent(memo)
    assert [len(call) for call in resend.calls] == [100, 100, 50]  # ceil(250 / 100) calls
    assert len(resend.calls) == math.ceil(n / 100)
    by_address = {recipient(email): email for email in resend.emails}
    assert len(resend.emails) == n and len(by_address) == n
    renderer = MemoRenderer(memo)
    for delivery in Delivery.objects.filter(memo=memo).select_related("developer"):
        developer = delivery.developer
        email = by_address[developer.email]
        [to] = email["to"]
        assert (parse_single_address(to).display_name, parse_single_address(to).addr_spec) == (
            developer.name,
            developer.email,
        )
        assert_full_render(renderer, developer, email["subject"], email["html"], email["text"])
        # Their own delivery id, for the tracking webhooks; their own id from Resend.
        assert metadata(email) == {"delivery_id": str(delivery.pk)}
        assert (delivery.status, delivery.provider_message_id) == ("sent", email["id"])
    assert "Zoë &amp; &lt;Co&gt; &#34;Q&#34; &#39;Dev&#39; 7" in by_address["fr-007@example.com"]["html"]
    assert len({d.provider_message_id for d in Delivery.objects.all()}) == n
    assert Memo.objects.get(pk=memo.pk).status == "sent"


@pytest.mark.django_db
def test_refused_recipients_fail_with_resends_reason_and_the_others_are_sent_once_with_their_own_ids(
    resend: ResendBatchProvider,
) -> None:
    memo = audience_in_france(7)
    resend.refuse = {"fr-001@example.com", "fr-004@example.com", "fr-005@example.com"}
    ids = sent(memo)
    send_batch(ids)  # a rerun changes nothing
    failed = Delivery.objects.filter(status="failed").select_related("developer")
    assert sorted(d.developer.email for d in failed) == sorted(resend.refuse)
    assert all(d.status_reason.startswith("refused by Resend: Invalid `to` field") for d in failed)
    assert [sorted(call) for call in resend.calls] == [
        [f"fr-00{i}@example.com" for i in (0, 2, 3, 6)]
    ]  # one call, the refused left out
    ids_by_address = {recipient(email): email["id"] for email in resend.emails}
    for delivery in Delivery.objects.filter(status="sent").select_related("developer"):
        assert delivery.provider_message_id == ids_by_address[delivery.developer.email]
    assert Delivery.objects.filter(status="sent").count() == 4


@pytest.mark.django_db
def test_resends_tracking_webhook_moves_the_delivery_it_is_about(resend: ResendBatchProvider, client: Client) -> None:
    memo = audience_in_france(3)
    sent(memo)
    by_address = {recipient(email): email for email in resend.emails}

    def post(email: dict[str, Any], event: str, forged: bool = False) -> int:
        body, headers = resend_webhook(email, event)
        if forged:
            headers["svix-signature"] = "v1," + base64.b64encode(b"\0" * 32).decode()
        response = client.post(
            "/anymail/resend/tracking/",
            body,
            content_type="application/json",
            headers={"Authorization": basic_auth(WEBHOOK_SECRET), **headers},
        )
        return response.status_code

    assert post(by_address["fr-000@example.com"], "email.delivered", forged=True) == 400
    assert post(by_address["fr-000@example.com"], "email.delivered") == 200
    assert post(by_address["fr-001@example.com"], "email.bounced") == 200
    statuses = dict(Delivery.objects.values_list("developer__external_id", "status"))
    assert statuses == {"fr-000": "delivered", "fr-001": "bounced", "fr-002": "sent"}
    bounced = Developer.objects.get(external_id="fr-001")
    assert bounced.email_status == "bounced"
    # Resend's words kept with the event (anymail reads no reason code out of them).
    assert "hard bounce" in DeliveryEvent.objects.get(delivery__developer=bounced, event_type="bounced").description


@pytest.mark.django_db
def test_resends_rate_limit_makes_the_call_wait_and_go_again_and_nothing_fails(
    resend: ResendBatchProvider, later: list[tuple[list[int], float]], clock: Clock
) -> None:
    memo = audience_in_france(5)
    resend.throttle, resend.retry_after = 1, "30"
    ids = sent(memo)
    [(retry_ids, countdown)] = later
    assert sorted(retry_ids) == ids and countdown >= 30
    assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"} and resend.emails == []
    # Each row's wait ends a moment after the one before it: the last one's end.
    waited = Delivery.objects.aggregate(last=Max("not_before"))["last"]
    assert waited is not None
    clock.move_to(waited)  # Retry-After waited out
    send_batch(retry_ids)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert [len(call) for call in resend.calls] == [5]


class SigningClock:
    """The clock Django's signer stamps links with (the seconds it signs at), stopped:
    a render in the same second makes the same links."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now


@pytest.fixture
def signing_clock(monkeypatch: pytest.MonkeyPatch) -> SigningClock:
    stopped = SigningClock(time.time())
    monkeypatch.setattr(signing, "time", stopped)
    return stopped


@pytest.mark.django_db
@pytest.mark.parametrize("links_signed_later", [False, True], ids=["same-second", "half-a-minute-later"])
def test_a_call_whose_answer_was_lost_is_sent_again_as_the_same_call_and_nobody_gets_it_twice(
    resend: ResendBatchProvider,
    settings: Any,
    later: list[tuple[list[int], float]],
    clock: Clock,
    signing_clock: SigningClock,
    links_signed_later: bool,
) -> None:
    """Resend took the call, its answer never came (a read timeout): the call goes again
    under its key. Rendered in the same second or later, it is the same request to the
    byte (each link is signed at its delivery's creation), so Resend answers it with the
    first call's ids and sends nothing; each delivery keeps its own id."""
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.5}
    memo = audience_in_france(4)
    resend.hold = 1
    ids = sent(memo)
    resend.held.get(timeout=5)[1].set()  # the answer goes to nobody
    [(retry_ids, _)] = later
    # Each row's wait ends a moment after the one before it: the last one's end.
    waited = Delivery.objects.aggregate(last=Max("not_before"))["last"]
    assert sorted(retry_ids) == ids and waited is not None
    clock.move_to(waited)
    if links_signed_later:
        signing_clock.now += 30
    send_batch(retry_ids)
    assert len(resend.emails) == 4 and len(resend.calls) == 1  # nobody twice
    [key] = {email["idempotency_key"] for email in resend.emails}
    assert resend.repeated == [key] and resend.conflicts == []  # the same call: sent nothing
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    given = {d.developer.email: d.provider_message_id for d in Delivery.objects.select_related("developer")}
    first_ids = {recipient(email): email["id"] for email in resend.emails}
    assert given == first_ids


@pytest.mark.django_db
def test_a_call_sent_again_while_resend_still_answers_the_first_waits_and_then_gets_the_first_calls_ids(
    resend: ResendBatchProvider,
    settings: Any,
    later: list[tuple[list[int], float]],
    clock: Clock,
    signing_clock: SigningClock,
) -> None:
    """Resend is still answering the first call (our side timed out) when it comes again:
    409 `concurrent_idempotent_requests`, waited out as throttling; the next try gets the
    first call's answer. Nobody gets it twice, nobody fails."""
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.5}
    memo = audience_in_france(3)
    resend.hold = 1
    sent(memo)
    _, release = resend.held.get(timeout=5)  # Resend has it, and has not answered yet

    def try_again() -> None:
        [(retry_ids, _)] = later
        later.clear()
        clock.move_to(Delivery.objects.aggregate(last=Max("not_before"))["last"])
        send_batch(retry_ids)

    try_again()
    assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"}  # waiting, not failed
    release.set()  # the first answer goes, to nobody
    wait_for(lambda: not resend.busy, timeout=5, what="Resend to finish the first call")
    try_again()
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"} and later == []
    assert [status for _, status in sorted(resend.log)] == [200, 409, 200]
    assert len(resend.emails) == 3 and {d.provider_message_id for d in Delivery.objects.all()} == {
        email["id"] for email in resend.emails
    }


@pytest.mark.e2e
@ON_FILESYSTEM_BROKER
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_workers_killed_mid_send_through_resend_send_everyone_exactly_once(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """1,000 recipients in calls of 100, a worker process SIGKILLed 6 times, the first
    just after Resend took a call and before we recorded it: within the keys' 24 hours
    what a killed worker left is sent again under the same key, so everyone gets the
    memo exactly once and every delivery is sent."""
    recipients = 1_000
    memo = audience(recipients)
    settings.EMAIL_BACKEND = BACKEND  # send_memo sizes the tasks for it; the sweeper knows it deduplicates
    with resend_batch_server() as server:
        kills = send_while_killing_workers(memo, server, tmp_path, monkeypatch, kills=6)
    again = set(server.repeated + server.conflicts)
    print(
        f"{len(again)} calls sent again under their key ({len(server.conflicts)} with links signed anew); "
        f"{len(server.calls)} calls taken"
    )
    assert_everyone_got_it_exactly_once(memo, recipients, map(recipient, server.emails))
    assert kills.between_acceptance_and_commit <= len(again) <= kills.made
    assert all(len(call) <= 100 for call in server.calls)
