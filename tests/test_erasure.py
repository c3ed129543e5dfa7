"""erase_developer: personal data goes, the evidence of what was sent and acknowledged stays."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from memo_service.developers.models import Developer
from memo_service.memos.models import Answer, Delivery, DeliveryEvent
from tests.conftest import answered, sent_delivery, tracking_event

pytestmark = pytest.mark.django_db


def test_it_pseudonymises_the_developer_and_keeps_the_evidence(memo, developers):
    cn = developers["cn"]
    delivery = sent_delivery(memo, cn)
    event_body = {"event-data": {"recipient": cn.email, "to": f"{cn.name} <{cn.email}>", "event": "delivered"}}
    tracking_event(delivery, "delivered", payload=event_body)
    approved_hash = answered(memo, cn).content_hash
    out = io.StringIO()
    call_command("erase_developer", "cn-1", stdout=out)

    cn = Developer.objects.get(external_id="cn-1")
    assert cn.email == f"erased-{cn.pk}@erased.invalid"
    assert (cn.name, cn.organization, cn.attributes, cn.is_active) == ("", "", {}, False)
    assert cn.erased_at is not None
    payload = json.dumps(DeliveryEvent.objects.get().payload)
    assert "cn-1@example.com" not in payload and "Wang Wei" not in payload
    assert DeliveryEvent.objects.get().payload["event-data"]["event"] == "delivered"
    assert Answer.objects.get().content_hash == approved_hash
    assert Delivery.objects.get(pk=delivery.pk).status == "delivered"

    call_command("erase_developer", "cn-1", stdout=out)
    assert "already erased" in out.getvalue()


def test_an_unknown_id_gets_a_clear_error(db):
    with pytest.raises(CommandError, match="no developer with external_id 'ghost'"):
        call_command("erase_developer", "ghost")


def test_an_erased_developer_is_in_no_audience_and_their_contact_is_gone(memo, developers):
    from memo_service.memos.audience import memo_audience

    Developer.objects.filter(external_id="cn-1").update(org_contact_email="boss@acme.example")
    call_command("erase_developer", "cn-1", stdout=io.StringIO())
    assert Developer.objects.get(external_id="cn-1").org_contact_email == ""
    assert not memo_audience(memo).filter(external_id="cn-1").exists()
