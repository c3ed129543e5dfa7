"""Outbound webhooks: the platform is told about answers and passed deadlines, signed."""

import datetime as dt
import hashlib
import hmac
import json

import pytest
from django.core.cache import cache
from django.utils import timezone

from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.evidence.sequencer import checkpoint_dict
from memo_service.memos.models import EvidenceCheckpoint, WebhookEndpoint, WebhookMessage
from memo_service.memos.webhooks import delivery, events
from memo_service.memos.webhooks.messages import webhooks_enqueue
from tests.conftest import answered, clock_at, sent_memo
from tests.loopback_provider import webhook_receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def platform(db):
    cache.clear()
    with webhook_receiver() as receiver:
        WebhookEndpoint.objects.create(url=receiver.url, events=[e.value for e in WebhookEndpoint.Event])
        yield receiver


@pytest.fixture
def sent(memo, developers):
    """Delivered to CN and RU an hour ago."""
    outcomes = {developers["cn"]: "delivered", developers["ru"]: "delivered"}
    return sent_memo(memo, outcomes, at=timezone.now() - dt.timedelta(hours=1))


def due_now(message):
    WebhookMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())


def verify_signature(headers, body, secret):
    parts = dict(p.split("=", 1) for p in headers["X-Memo-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts["v1"], expected)


def test_an_acknowledgement_is_posted_to_the_platform_signed(
    client, sent, developers, platform, eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            ack_url(sent.pk, developers["cn"].pk).removeprefix("http://testserver"),
            {"response": "acknowledged", "interacted": "1"},
            HTTP_USER_AGENT="Mozilla/5.0 phone",
        )
    by_event = {headers["X-Memo-Event"]: (headers, body) for headers, body in platform.requests}
    headers, body = by_event["memo.acknowledged"]
    secret = WebhookEndpoint.objects.get().secret
    assert verify_signature(headers, body, secret)
    data = json.loads(body)["data"]
    # The sequencer chained the answer and published its checkpoint to the platform too.
    headers, body = by_event["evidence.checkpoint"]
    assert verify_signature(headers, body, secret)
    head = json.loads(body)["data"]
    assert head == checkpoint_dict(EvidenceCheckpoint.objects.get(memo=sent, seq=head["seq"]))
    assert (data["memo"], data["developer"], data["response"], data["content_hash"]) == (
        sent.slug,
        "cn-1",
        "acknowledged",
        sent.content_hash,
    )
    message = WebhookMessage.objects.get(event="memo.acknowledged")
    assert (message.status, message.attempts) == ("delivered", 1)
    assert message.attempt_log.get().status_code == 200


def test_a_failed_delivery_is_retried_with_backoff_and_each_attempt_is_logged(sent, platform):
    platform.answers = [500, 503]
    webhooks_enqueue("memo.disputed", [{"memo": sent.slug}])
    message = WebhookMessage.objects.get()
    delivery.webhook_deliver(message_id=message.pk)
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("pending", 1)
    assert message.next_attempt_at is not None
    first_wait = (message.next_attempt_at - timezone.now()).total_seconds()
    assert 40 < first_wait < 80
    assert delivery.webhooks_retry_due() == 0  # not due yet
    delivery.webhook_deliver(message_id=message.pk)  # not due: nothing is sent
    assert len(platform.requests) == 1
    due_now(message)
    delivery.webhook_deliver(message_id=message.pk)
    message.refresh_from_db()
    assert message.next_attempt_at is not None
    assert (message.next_attempt_at - timezone.now()).total_seconds() > first_wait
    due_now(message)
    delivery.webhook_deliver(message_id=message.pk)
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("delivered", 3)
    assert list(message.attempt_log.order_by("id").values_list("status_code", flat=True)) == [500, 503, 200]


def test_it_gives_up_after_the_last_attempt(sent, platform, monkeypatch):
    monkeypatch.setattr(delivery, "MAX_ATTEMPTS", 2)
    platform.answers = [500, 500]
    webhooks_enqueue("memo.disputed", [{"memo": sent.slug}])
    message = WebhookMessage.objects.get()
    delivery.webhook_deliver(message_id=message.pk)
    due_now(message)
    delivery.webhook_deliver(message_id=message.pk)
    message.refresh_from_db()
    assert (message.status, message.next_attempt_at) == ("failed", None)


def test_an_unreachable_endpoint_is_an_attempt_with_the_error(sent, platform):
    endpoint = WebhookEndpoint.objects.get()
    endpoint.url = "http://127.0.0.1:9/hooks"
    endpoint.save()
    webhooks_enqueue("memo.disputed", [{"memo": sent.slug}])
    message = WebhookMessage.objects.get()
    delivery.webhook_deliver(message_id=message.pk)
    assert "ConnectionError" in message.attempt_log.get().error


def test_after_the_deadline_the_platform_gets_the_developers_who_did_not_acknowledge(
    sent, developers, platform, monkeypatch, eager, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(events, "PAGE", 1)
    answered(sent, developers["cn"])
    deadline_passed = clock_at(sent.ack_deadline + dt.timedelta(minutes=1))
    with deadline_passed, django_capture_on_commit_callbacks(execute=True):
        assert events.memos_deadline_notify() == 1
        assert events.memos_deadline_notify() == 0  # once per memo
    bodies = [json.loads(b) for _, b in platform.requests]
    assert [b["event"] for b in bodies] == ["memo.deadline_passed"]
    assert bodies[0]["data"]["not_acknowledged"] == ["ru-1"] and bodies[0]["data"]["pages"] == 1


def test_endpoints_only_get_the_events_they_asked_for(sent, platform):
    endpoint = WebhookEndpoint.objects.get()
    endpoint.events = ["memo.deadline_passed"]
    endpoint.save()
    webhooks_enqueue("memo.acknowledged", [{}])
    assert not WebhookMessage.objects.exists()


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254 is a link-local address"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254 is a private address"),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "metadata.google.internal is a private or metadata host name",
        ),
        ("http://127.0.0.1:8000/admin/", "127.0.0.1 is a loopback address"),
        ("https://localhost/hooks", "localhost is a private or metadata host name"),
        ("https://10.1.2.3/hooks", "10.1.2.3 is a private address"),
        ("http://[::ffff:169.254.169.254]/", "is a link-local address"),
        # IPv6 forms that carry an IPv4 address a gateway or the host reaches it by.
        (
            "http://[64:ff9b::a9fe:a9fe]/",
            "64:ff9b::a9fe:a9fe embeds 169.254.169.254, and 169.254.169.254 is a link-local",
        ),
        ("http://[64:ff9b:1::a00:1]/", "embeds 10.0.0.1, and 10.0.0.1 is a private address"),
        ("http://[2002:7f00:1::1]/", "2002:7f00:1::1 embeds 127.0.0.1, and 127.0.0.1 is a loopback address"),
        ("http://[::127.0.0.1]/", "embeds 127.0.0.1, and 127.0.0.1 is a loopback address"),
        ("http://[2001:0:a9fe:a9fe:0:f227:80fe:3f5b]/", "embeds 169.254.169.254"),  # Teredo, its server
        ("http://100.100.100.200/latest/meta-data/", "100.100.100.200 is a non-public address"),  # Alibaba's metadata
    ],
)
def test_an_endpoint_aimed_at_cloud_metadata_loopback_or_private_addresses_cannot_be_saved(
    admin_client, settings, url, reason
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    response = admin_client.post(
        "/admin/memos/webhookendpoint/add/",
        {
            "url": url,
            "events": ["memo.acknowledged"],
            "secret": "s" * 32,
            "is_active": "on",
        },
    )
    assert response.status_code == 200
    assert reason in response.content.decode()
    assert not WebhookEndpoint.objects.exists()
    # A public address is accepted (an address needs no DNS lookup).
    admin_client.post(
        "/admin/memos/webhookendpoint/add/",
        {
            "url": "https://93.184.215.14/hooks",
            "events": ["memo.acknowledged"],
            "secret": "s" * 32,
            "is_active": "on",
        },
    )
    assert WebhookEndpoint.objects.get().url == "https://93.184.215.14/hooks"


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f.1"])
def test_an_endpoint_that_resolves_to_a_private_address_at_send_time_is_not_posted_to(sent, platform, settings, host):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    # Saved when its name pointed elsewhere (or written behind the form's back): the
    # send resolves it again, sees loopback (the decimal and hex spellings too) and stops.
    endpoint = WebhookEndpoint.objects.get()
    endpoint.url = platform.url.replace("127.0.0.1", host)
    endpoint.save()
    webhooks_enqueue("memo.disputed", [{"memo": sent.slug}])
    message = WebhookMessage.objects.get()
    delivery.webhook_deliver(message_id=message.pk)
    assert platform.requests == []
    assert "not sent: " in message.attempt_log.get().error
    assert "resolves to 127.0.0.1 is a loopback address" in message.attempt_log.get().error
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("pending", 1)  # retried later, then given up


def test_a_send_connects_to_the_address_it_checked_not_to_a_fresh_lookup(platform):
    """DNS rebinding: a name that resolves to a public address for the check and to a
    private one a moment later. The request goes to the checked address; the name only
    travels in the Host header (and would be the TLS server name)."""
    import requests

    from memo_service.memos.webhooks.netguard import PinnedAdapter

    port = platform.url.split(":")[2].split("/")[0]
    with requests.Session() as session:
        session.mount("http://", PinnedAdapter("127.0.0.1"))
        # This name resolves nowhere: only the pinned address can have been reached.
        response = session.post(f"http://rebind.invalid:{port}/hooks/memo", data=b"{}", timeout=10)
    assert response.status_code == 200
    [(headers, _)] = platform.requests
    assert headers["Host"] == f"rebind.invalid:{port}"
