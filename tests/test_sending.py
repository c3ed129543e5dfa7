"""Workers hand each email to the provider through anymail's real Mailgun backend."""

import pytest

from memo_service.memos.dispatch import memo_dispatch, memo_send_start
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.sending import delivery_send_batch
from tests.conftest import approve

pytestmark = pytest.mark.django_db


def queued(memo):
    approve(memo)
    memo_send_start(memo=memo)
    memo_dispatch(memo_id=memo.pk)
    return list(Delivery.objects.filter(memo=memo).order_by("id").values_list("id", flat=True))


def test_each_developer_gets_one_email_in_their_language_with_their_link(memo, mailgun):
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)

    by_to = {m.first("to"): m for m in mailgun.accepted}
    assert set(by_to) == {"Wang Wei <cn-1@example.com>", "Olga Petrova <ru-1@example.com>"}
    cn = by_to["Wang Wei <cn-1@example.com>"]
    assert cn.first("subject") == "来自中国的访问将被阻止"
    assert "http://testserver/ack/" in cn.first("text") and "http://testserver/ack/" in cn.first("html")
    assert cn.first("from") == "Platform notices <notices@example.com>"
    # Our delivery id travels as metadata, for the tracking webhooks; no personal data.
    delivery = Delivery.objects.get(developer__external_id="cn-1")
    assert cn.first("v:delivery_id") == str(delivery.pk)
    assert (delivery.status, delivery.provider_message_id, delivery.language) == ("sent", cn.message_id, "zh-hans")
    assert delivery.sent_at is not None and delivery.attempts == 1
    assert Memo.objects.get(pk=memo.pk).status == "sent"


def test_a_batch_run_twice_sends_nobody_twice(memo, mailgun):
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    delivery_send_batch(delivery_ids=ids)
    assert len(mailgun.accepted) == 2


@pytest.mark.parametrize("status, body, reason", [
    (400, {"message": "'to' parameter is not a valid address"}, "not a valid address"),
    (500, {"message": "Internal error"}, "Internal error"),
])
def test_a_provider_error_is_recorded_on_the_delivery_with_its_reason(memo, mailgun, status, body, reason):
    ids = queued(memo)
    mailgun.failures.append((status, body))
    delivery_send_batch(delivery_ids=ids)
    failed = Delivery.objects.get(status="failed")
    assert reason in failed.last_error and str(status) in failed.last_error
    assert Delivery.objects.filter(status="sent").count() == 1
    assert len(mailgun.accepted) == 1


def test_wrong_credentials_fail_the_deliveries_with_the_providers_answer(memo, mailgun, settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "MAILGUN_API_KEY": "wrong"}
    delivery_send_batch(delivery_ids=queued(memo))
    assert set(Delivery.objects.values_list("status", flat=True)) == {"failed"}
    assert "Invalid private key" in Delivery.objects.first().last_error
    assert mailgun.accepted == []


def test_a_template_that_fails_for_one_developer_fails_only_that_delivery(memo, developers, mailgun):
    developers["ru"].name = ""
    developers["ru"].save()
    ids = queued(memo)
    Memo.objects.filter(pk=memo.pk).update(text_body="{{ developer.name[0] }}")
    delivery_send_batch(delivery_ids=ids)
    ru = Delivery.objects.get(developer=developers["ru"])
    assert ru.status == "failed" and ru.last_error.startswith("template error")
    assert Delivery.objects.get(developer=developers["cn"]).status == "sent"
    assert len(mailgun.accepted) == 1


def test_the_local_outbox_is_the_default(memo, settings):
    settings.EMAIL_BACKEND = "memo_service.outbox.OutboxEmailBackend"  # pytest-django swaps in locmem
    delivery_send_batch(delivery_ids=queued(memo))
    files = sorted(settings.OUTBOX_DIR.glob("*.eml"))
    assert len(files) == 2
    delivery = Delivery.objects.first()
    assert delivery.provider_message_id.endswith("@outbox.local>")
    assert any(delivery.provider_message_id in f.read_text() for f in files)


def test_a_read_timeout_is_outcome_unknown_not_failed(memo, mailgun, settings):
    """The provider may have accepted it: sending again could duplicate it."""
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.3}
    mailgun.delay = 1.0
    delivery_send_batch(delivery_ids=queued(memo))
    assert set(Delivery.objects.values_list("status", flat=True)) == {"outcome_unknown"}
    assert "ReadTimeout" in Delivery.objects.first().last_error or "timed out" in Delivery.objects.first().last_error


def test_a_provider_that_cannot_be_reached_fails_the_delivery(memo, mailgun, settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "MAILGUN_API_URL": "http://127.0.0.1:9/v3"}
    delivery_send_batch(delivery_ids=queued(memo))
    assert set(Delivery.objects.values_list("status", flat=True)) == {"failed"}


def test_a_template_cannot_redirect_the_email(memo, mailgun):
    ids = queued(memo)
    # Bypasses the save-time check on purpose: even then the address comes from the database.
    Memo.objects.filter(pk=memo.pk).update(text_body="{{ developer.update(email='x@evil.example') }}")
    delivery_send_batch(delivery_ids=ids)
    assert {m.first("to") for m in mailgun.accepted} <= {"Wang Wei <cn-1@example.com>", "Olga Petrova <ru-1@example.com>"}


def test_an_address_that_bounced_before_is_not_mailed_and_its_delivery_says_why(memo, developers, mailgun):
    developers["ru"].email_status = "bounced"
    developers["ru"].save()
    delivery_send_batch(delivery_ids=queued(memo))
    ru = Delivery.objects.get(developer=developers["ru"])
    assert ru.status == "failed" and ru.last_error.startswith("suppressed: the address bounced")
    assert [m.first("to") for m in mailgun.accepted] == ["Wang Wei <cn-1@example.com>"]


def test_the_send_time_is_kept_when_the_providers_event_arrives_first(memo, developers):
    from memo_service.memos.sending import delivery_claim, delivery_record_sent

    ids = queued(memo)
    delivery_claim(delivery_id=ids[0])
    Delivery.objects.filter(pk=ids[0]).update(status="delivered")  # the webhook was faster
    delivery_record_sent(delivery_id=ids[0], message_id="<m@x>", language="en")
    delivery = Delivery.objects.get(pk=ids[0])
    assert (delivery.status, delivery.provider_message_id) == ("delivered", "<m@x>")
    assert delivery.sent_at is not None
