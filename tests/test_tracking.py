"""The provider's tracking webhook, as Mailgun posts it to /anymail/mailgun/tracking/."""

import base64
import hashlib
import hmac
import json
import uuid

import pytest

from memo_service.developers.models import Developer
from memo_service.memos.models import Delivery, DeliveryEvent
from tests.conftest import WEBHOOK_SECRET, WEBHOOK_SIGNING_KEY, sent_delivery

pytestmark = pytest.mark.django_db
URL = "/anymail/mailgun/tracking/"
AUTH = "Basic " + base64.b64encode(WEBHOOK_SECRET.encode()).decode()


def mailgun_event(event, delivery=None, message_id="<1.loopback@example.com>", token=None, **data):
    token = token or uuid.uuid4().hex
    timestamp = "1783000000"
    signature = hmac.new(WEBHOOK_SIGNING_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    event_data = {
        "event": event,
        "id": uuid.uuid4().hex[:22],
        "timestamp": 1783000000.5,
        "recipient": "cn-1@example.com",
        "message": {"headers": {"message-id": message_id.strip("<>")}},
        "user-variables": {"delivery_id": str(delivery.pk)} if delivery else {},
        **data,
    }
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event_data}


def post(client, payload, auth=AUTH):
    return client.post(URL, json.dumps(payload), content_type="application/json", HTTP_AUTHORIZATION=auth)


BOUNCE = {
    "severity": "permanent",
    "reason": "bounce",
    "delivery-status": {"code": 550, "message": "5.1.1 mailbox does not exist", "description": ""},
}


@pytest.fixture
def delivery(memo, developers, mailgun):
    """CN's email, sent through the loopback Mailgun: its first call, <1.loopback@example.com>."""
    delivery = sent_delivery(memo, developers["cn"])
    assert delivery.provider_message_id == "<1.loopback@example.com>"
    return delivery


def status(delivery):
    delivery.refresh_from_db()
    return delivery.status


def test_a_delivered_event_marks_the_delivery_delivered(client, delivery):
    assert post(client, mailgun_event("delivered", delivery)).status_code == 200
    assert status(delivery) == "delivered"
    event = DeliveryEvent.objects.get()
    assert (event.provider, event.event_type, event.delivery) == ("Mailgun", "delivered", delivery)


def test_a_hard_bounce_marks_the_delivery_and_the_developers_address(client, delivery):
    post(client, mailgun_event("failed", delivery, **BOUNCE))
    assert status(delivery) == "bounced"
    assert Developer.objects.get(pk=delivery.developer_id).email_status == "bounced"


def test_a_temporary_failure_changes_nothing_yet(client, delivery):
    post(client, mailgun_event("failed", delivery, severity="temporary", reason="generic"))
    assert status(delivery) == "sent"
    assert DeliveryEvent.objects.get().event_type == "deferred"


def test_a_complaint_marks_the_developers_address(client, delivery):
    post(client, mailgun_event("complained", delivery))
    assert status(delivery) == "complained"
    assert Developer.objects.get(pk=delivery.developer_id).email_status == "complained"


def test_an_event_without_our_metadata_is_matched_by_message_id(client, delivery):
    post(client, mailgun_event("delivered", None, message_id=delivery.provider_message_id))
    assert status(delivery) == "delivered"


def test_an_event_without_our_metadata_for_a_batch_calls_id_moves_only_its_recipients_delivery(
    client, delivery, developers
):
    """A batch call's one id (Mailgun's, SparkPost's transmission) names many deliveries:
    the event's recipient says whose it is, and without one nobody's is guessed."""
    other = sent_delivery(delivery.memo, developers["ru"])
    Delivery.objects.filter(pk=other.pk).update(provider_message_id=delivery.provider_message_id)
    post(
        client, mailgun_event("delivered", None, message_id=delivery.provider_message_id, recipient="RU-1@example.com")
    )
    assert (status(delivery), status(other)) == ("sent", "delivered")
    post(client, mailgun_event("failed", None, message_id=delivery.provider_message_id, recipient="", **BOUNCE))
    assert (status(delivery), status(other)) == ("sent", "delivered")


def test_a_replayed_event_is_stored_and_applied_once(client, delivery):
    payload = mailgun_event("failed", delivery, **BOUNCE)
    for _ in range(3):
        assert post(client, payload).status_code == 200
    assert DeliveryEvent.objects.count() == 1 and status(delivery) == "bounced"


def test_a_late_event_never_moves_a_status_backwards(client, delivery):
    post(client, mailgun_event("failed", delivery, **BOUNCE))
    post(client, mailgun_event("delivered", delivery))
    assert status(delivery) == "bounced"
    post(client, mailgun_event("complained", delivery))
    post(client, mailgun_event("delivered", delivery))
    assert status(delivery) == "complained"
    assert DeliveryEvent.objects.count() == 4


def test_events_for_unknown_messages_and_types_are_accepted_and_kept(client, delivery):
    assert post(client, mailgun_event("delivered", None, message_id="<elsewhere@example.com>")).status_code == 200
    assert post(client, mailgun_event("opened", delivery)).status_code == 200
    assert status(delivery) == "sent"
    assert DeliveryEvent.objects.filter(delivery=None).count() == 1


@pytest.mark.parametrize("auth", ["", "Basic " + base64.b64encode(b"hook:wrong").decode()])
def test_a_post_without_the_webhook_secret_is_refused_and_changes_nothing(client, delivery, auth):
    assert post(client, mailgun_event("delivered", delivery), auth=auth).status_code == 400
    assert status(delivery) == "sent" and not DeliveryEvent.objects.exists()


def test_a_post_with_a_forged_signature_is_refused(client, delivery):
    payload = mailgun_event("delivered", delivery)
    payload["signature"]["signature"] = "0" * 64
    assert post(client, payload).status_code == 400
    assert status(delivery) == "sent" and not DeliveryEvent.objects.exists()


def test_a_malformed_body_is_refused_and_changes_nothing(client, delivery):
    response = client.post(URL, "{not json", content_type="application/json", HTTP_AUTHORIZATION=AUTH)
    assert response.status_code == 400
    assert not DeliveryEvent.objects.exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_deliveries_whose_outcome_was_unknown_are_settled_by_the_providers_own_webhooks(
    live_server, memo, developers, mailgun, settings
):
    """A worker died after Mailgun accepted a batch: the sweeper could only say "outcome
    unknown". Mailgun's delivered events, carrying our delivery id, settle each one."""
    from memo_service.memos.send.dispatch import memo_dispatch, memo_send_start
    from memo_service.memos.send.sending import delivery_send_batch
    from tests.conftest import approve
    from tests.loopback_provider import mailgun_events_post

    settings.EMAIL_BACKEND = "memo_service.backends.mailgun.EmailBackend"
    approve(memo)
    memo_send_start(memo=memo)
    memo_dispatch(memo_id=memo.pk)
    delivery_send_batch(delivery_ids=list(Delivery.objects.values_list("id", flat=True)))
    # The answer never came (a worker killed mid-call: tests/test_faults.py), as it leaves the rows.
    Delivery.objects.update(status="outcome_unknown", provider_message_id="")
    posted = mailgun_events_post(mailgun, live_server.url + URL, WEBHOOK_SECRET, WEBHOOK_SIGNING_KEY)
    assert posted == 2
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}


def refused(response, status, reason):
    assert (response.status_code, reason in response.content.decode()) == (status, True), response.content
    assert not DeliveryEvent.objects.exists()


def test_every_event_is_refused_while_the_webhook_secret_is_unset(client, delivery, settings):
    settings.ANYMAIL = {k: v for k, v in settings.ANYMAIL.items() if k != "WEBHOOK_SECRET"}
    refused(post(client, mailgun_event("delivered", delivery)), 403, "ANYMAIL_WEBHOOK_SECRET is not set")
    refused(post(client, mailgun_event("delivered", delivery), auth=""), 403, "ANYMAIL_WEBHOOK_SECRET is not set")
    assert status(delivery) == "sent"


def test_metadata_that_is_not_an_object_is_refused_with_the_reason(client, delivery):
    payload = mailgun_event("delivered", delivery)
    payload["event-data"]["user-variables"] = ["delivery_id", str(delivery.pk)]
    refused(post(client, payload), 400, "metadata must be an object, not list")
    assert status(delivery) == "sent"


@pytest.mark.parametrize(
    "event_data", [[], "delivered", {"no-event": True}, {"event": "delivered", "timestamp": "soon"}]
)
def test_a_signed_body_that_is_not_a_mailgun_event_is_refused_with_the_reason(client, delivery, event_data):
    payload = mailgun_event("delivered", delivery)
    payload["event-data"] = event_data
    refused(post(client, payload), 400, "malformed event: ")


def test_a_provider_with_no_configuration_is_refused_with_the_reason(client, delivery, settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": WEBHOOK_SECRET}  # no Mailgun signing key
    refused(post(client, mailgun_event("delivered", delivery)), 400, "mailgun is not configured for tracking webhooks")
    assert (
        client.post(
            "/anymail/nosuchesp/tracking/", "{}", content_type="application/json", HTTP_AUTHORIZATION=AUTH
        ).status_code
        == 404
    )


def test_an_event_for_an_unknown_message_is_stored_once(client, delivery):
    payload = mailgun_event("delivered", None, message_id="<elsewhere@example.com>")
    assert [post(client, payload).status_code for _ in range(3)] == [200, 200, 200]
    assert DeliveryEvent.objects.filter(delivery=None).count() == 1


@pytest.mark.parametrize(
    "url",
    [
        "/anymail/mandrill/",  # anymail's combined view: never around our wrapper
        "/anymail/mailgun/inbound/",
        "/anymail/amazon_ses/inbound/",
        "/anymail/resend/inbound/",
        "/anymail/postmark/tracking/",  # a provider this deployment neither sends through nor configured
        "/anymail/mailgun/inbound_mime/",
    ],
)
def test_a_stranger_posting_to_anymail_routes_that_are_not_ours_gets_404_never_500(client, delivery, url):
    response = client.post(url, "{}", content_type="application/json", HTTP_AUTHORIZATION=AUTH)
    assert response.status_code == 404


def test_a_provider_configured_beside_the_one_sent_through_keeps_its_webhook(client, delivery, settings):
    """Switched to another provider, the old one's late events still arrive."""
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    assert post(client, mailgun_event("delivered", delivery)).status_code == 200  # ANYMAIL_MAILGUN_* are set
