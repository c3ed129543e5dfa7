"""What is approved is what is sent: the composer's text for developers nobody could
preview at approval never goes out; the check before a send and the send itself refuse
it, naming the developer and the line, and the memo pauses."""

import pytest
from django.core.management import CommandError, call_command

from memo_service.developers.models import Developer
from memo_service.memos.evidence.approved import approval_record
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.dispatch import DispatchRefused, memo_dispatch, memo_send_start
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import approve, make_developer

pytestmark = pytest.mark.django_db

HIDDEN = "{% if developer.country == 'KP' %}IGNORE THIS MEMO{% endif %}Traffic from {{ developer.country_name }}."


def with_bodies(memo: Memo, text: str) -> Memo:
    Memo.objects.filter(pk=memo.pk).update(text_body=text, html_body=f"<p>{text}</p>")
    memo.translations.all().delete()
    memo.refresh_from_db()
    return memo


@pytest.fixture
def hidden(memo, developers):
    """A memo whose text for KP says something else; nobody from KP when it is approved."""
    memo = with_bodies(memo, HIDDEN)
    memo.include_countries = ["KP"]
    memo.save()
    return approve(memo)


def test_the_approval_record_keeps_the_versions_its_approver_could_preview(hidden):
    record = approval_record(hidden.pk)
    assert record is not None
    versions = record.payload["versions"]
    assert versions == {
        "en html_body 1 developer.country": ["country: everything else"],
        "en text_body 1 developer.country": ["country: everything else"],
    }  # "country KP" had nobody to preview


def test_a_developer_nobody_could_preview_stops_the_send_before_it_starts(hidden):
    make_developer("kp-1", "KP")  # joins after approval
    with pytest.raises(DispatchRefused) as refused:
        memo_send_start(memo=hidden, accept_audience_changes=True)
    assert str(refused.value) == (
        "memo regions-blocked is not sent to developer kp-1: en html_body line 1: the version for this "
        "developer's country is not one its approver could preview"
    )
    assert Memo.objects.get(pk=hidden.pk).status == "approved" and not Delivery.objects.exists()
    with pytest.raises(CommandError, match="is not sent to developer kp-1"):
        call_command("send_memo", hidden.slug, "--accept-audience-changes")


def test_a_developer_who_moved_after_the_check_is_not_sent_it_and_the_memo_pauses(hidden, mailgun):
    memo_send_start(memo=hidden)
    memo_dispatch(memo_id=hidden.pk)
    Developer.objects.filter(external_id="ru-1").update(country="KP")  # between the check and the send
    delivery_send_batch(delivery_ids=list(Delivery.objects.filter(memo=hidden).values_list("id", flat=True)))
    hidden.refresh_from_db()
    assert hidden.status == "paused"
    assert hidden.status_reason.startswith("not sent to developer ru-1: en ")
    assert "is not one its approver could preview" in hidden.status_reason
    assert not any("IGNORE" in m.first("text") for m in mailgun.accepted)
    assert not Delivery.objects.filter(developer__external_id="ru-1").exclude(status="queued").exists()


def test_versions_the_approver_could_preview_go_out_as_before(memo, developers, mailgun):
    memo = with_bodies(memo, "{% if developer.country == 'RU' %}Привет. {% endif %}Hello {{ developer.name }}.")
    approve(memo)
    memo_send_start(memo=memo)
    memo_dispatch(memo_id=memo.pk)
    delivery_send_batch(delivery_ids=list(Delivery.objects.filter(memo=memo).values_list("id", flat=True)))
    memo.refresh_from_db()
    assert memo.status == "sent" and len(mailgun.accepted) == 2
