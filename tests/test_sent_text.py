"""The developer's page shows the text that was sent, and the answer records its hash."""

import hashlib

import pytest
from django.contrib.auth import get_user_model

from memo_service.developers.models import Developer
from memo_service.memos.answer.disputes import dispute_resolve
from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.compose.context import values_from_stored
from memo_service.memos.evidence.sequencer import evidence_seal
from memo_service.memos.evidence.verify import evidence_verify
from memo_service.memos.models import (
    Answer,
    Delivery,
    EvidenceRecord,
)
from memo_service.memos.send.sending import delivery_send_batch
from tests.test_evidence import emails
from tests.test_sending import queued

pytestmark = pytest.mark.django_db
PHONE = "Mozilla/5.0 (iPhone) Mobile Safari"


def sent_hash(message):
    """SHA-256 of the email the provider accepted, as emails.email_text_hash makes it."""
    digest = hashlib.sha256()
    for part in (message.first("subject"), message.first("text"), message.first("html")):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


@pytest.fixture
def sent(memo, mailgun):
    delivery_send_batch(delivery_ids=queued(memo))
    return {m.first("to"): m for m in mailgun.accepted}


def open_page(client, memo, developer):
    client.get(ack_url(memo.pk, developer.pk).removeprefix("http://testserver"))
    return f"/ack/memo/{memo.pk}/"


def test_each_email_keeps_the_hash_of_exactly_what_the_provider_got_and_the_chain_holds_it(memo, sent):
    ru = Delivery.objects.get(developer__external_id="ru-1")
    assert ru.text_hash == sent_hash(sent["Olga Petrova <ru-1@example.com>"])
    values = values_from_stored(ru.rendered_with)
    assert values is not None and values["country"] == "RU"
    evidence_seal(memo_id=memo.pk)
    handovers = EvidenceRecord.objects.filter(memo=memo, kind="handover")  # a record per provider call
    proved = {entry["delivery"]: entry for handover in handovers for entry in emails(handover)}
    assert proved[ru.pk]["text_hash"] == ru.text_hash
    assert evidence_verify(memo).ok


def test_after_a_region_correction_the_page_shows_the_text_sent_the_outcome_and_no_acknowledge(
    client, memo, sent, developers
):
    page = open_page(client, memo, developers["ru"])
    client.post(page, {"interacted": "1", "response": "disputes_region", "country": "US"}, HTTP_USER_AGENT=PHONE)
    dispute = Answer.objects.get(response="disputes_region")
    assert dispute.text_hash == Delivery.objects.get(developer=developers["ru"]).text_hash
    admin = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-123")
    dispute_resolve(answer=dispute, outcome="corrected", by=admin, note="Checked")
    Developer.objects.filter(pk=developers["ru"].pk).update(name="Olga Renamed")
    shown = client.get(page).content.decode()
    assert "Dear Olga Petrova" in shown and "Traffic from Russia will be blocked" in shown  # as sent
    assert "Olga Renamed" not in shown and "United States of America will be blocked" not in shown
    assert "We corrected your region to United States of America." in shown
    assert 'value="acknowledged"' not in shown and "This memo no longer applies to you" in shown
    response = client.post(page, {"interacted": "1", "response": "acknowledged"}, HTTP_USER_AGENT=PHONE)
    assert response.status_code == 400
    assert not Answer.objects.filter(response="acknowledged").exists()


def test_an_email_whose_values_an_older_send_kept_with_their_keys_still_shows_as_sent(client, memo, sent, developers):
    delivery = Delivery.objects.get(developer=developers["ru"])
    keyed = values_from_stored(delivery.rendered_with)
    Delivery.objects.filter(pk=delivery.pk).update(rendered_with=keyed)  # as sends before lists stored them
    Developer.objects.filter(pk=developers["ru"].pk).update(name="Olga Renamed")
    shown = client.get(open_page(client, memo, developers["ru"])).content.decode()
    assert "Dear Olga Petrova" in shown and "Traffic from Russia will be blocked" in shown
    assert "Olga Renamed" not in shown


@pytest.mark.parametrize("form", ["list", "keys"])
def test_an_email_kept_before_the_traffic_values_existed_still_shows_as_sent(client, memo, sent, developers, form):
    delivery = Delivery.objects.get(developer=developers["ru"])
    keyed = values_from_stored(delivery.rendered_with)
    assert keyed is not None
    earlier = {k: v for k, v in keyed.items() if not k.startswith("traffic_")}  # as sends before kept them
    Delivery.objects.filter(pk=delivery.pk).update(rendered_with=list(earlier.values()) if form == "list" else earlier)
    Developer.objects.filter(pk=developers["ru"].pk).update(name="Olga Renamed")
    shown = client.get(open_page(client, memo, developers["ru"])).content.decode()
    assert "Dear Olga Petrova" in shown and "Olga Renamed" not in shown


def test_erasure_blanks_the_values_an_email_was_rendered_with(memo, sent):
    import io

    from django.core.management import call_command

    call_command("erase_developer", "ru-1", stdout=io.StringIO())
    assert Delivery.objects.get(developer__external_id="ru-1").rendered_with == {}
    kept = values_from_stored(Delivery.objects.get(developer__external_id="cn-1").rendered_with)
    assert kept is not None and kept["name"] == "Wang Wei"


def test_a_batched_send_keeps_the_hash_of_what_each_recipient_got(memo, mailgun, settings):
    """The batching backend sends the skeleton once and each one's values: the hash is
    streamed from them without joining the email, and is the hash of what arrived."""
    from tests.conftest import make_developer

    settings.EMAIL_BACKEND = "memo_service.backends.mailgun.EmailBackend"
    make_developer("ru-2", "RU", name="Ivan Petrov")
    delivery_send_batch(delivery_ids=queued(memo))
    assert (mailgun.calls, len(mailgun.accepted)) == (2, 3)  # one call per language: RU's two go together
    for message in mailgun.accepted:
        delivery = Delivery.objects.get(pk=int(message.first("v:delivery_id")))
        assert delivery.text_hash == sent_hash(message)
