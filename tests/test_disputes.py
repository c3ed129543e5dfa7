"""The admin's queue of "my region is wrong" answers; each is decided on its case
(tests/test_cases.py has the case's own tests)."""

import pytest
from django.urls import reverse

from memo_service.developers.models import Developer
from memo_service.memos.models import Answer, AuditEvent, Case, DisputeResolution
from tests.conftest import answered, sent_memo

pytestmark = pytest.mark.django_db


@pytest.fixture
def dispute(memo, developers):
    sent_memo(memo, {developers["ru"]: "delivered"})
    return answered(memo, developers["ru"], "disputes_region", country="KZ", comment="We moved")


OUTCOMES = {"correct_region": "corrected", "confirm_region": "confirmed", "exempt_developer": "exempted"}


def act(admin_client, action, answer):
    """The decision made on the dispute's case page, through its confirmation."""
    case = Case.objects.get(answer=answer)
    return admin_client.post(
        reverse("admin:memos_case_decide", args=[case.pk]),
        {"outcome": OUTCOMES[action], "rationale": "Checked the invoices", "confirmed": "1"},
        follow=True,
    )


def test_the_queue_lists_open_disputes(admin_client, dispute):
    page = admin_client.get(reverse("admin:memos_dispute_changelist") + "?state=open").content.decode()
    assert "ru-1" in page and "Kazakhstan" in page and "We moved" in page


def test_correcting_the_region_moves_the_developer_audits_it_and_exempts_them(
    admin_client, dispute, admin_user, client
):
    response = act(admin_client, "correct_region", dispute)
    assert "Decided: region corrected." in response.content.decode()
    assert Developer.objects.get(external_id="ru-1").country.code == "KZ"
    resolution = DisputeResolution.objects.get()
    assert (resolution.outcome, resolution.exempt, resolution.resolved_by) == ("corrected", True, admin_user)
    audit = AuditEvent.objects.get(action="developer.country_changed")
    assert (audit.actor, audit.detail["old"], audit.detail["new"]) == (admin_user, "RU", "KZ")
    # The answer itself is unchanged evidence.
    dispute.refresh_from_db()
    assert dispute.country_claimed.code == "KZ" and dispute.response == "disputes_region"


def test_the_developer_sees_the_outcome_on_their_page(admin_client, dispute, client):
    from memo_service.memos.answer.tokens import ack_url

    act(admin_client, "correct_region", dispute)
    page = client.get(ack_url(dispute.memo_id, dispute.developer_id).removeprefix("http://testserver"), follow=True)
    html = page.content.decode()
    assert "We corrected your region to Kazakhstan" in html and "This memo no longer applies to you" in html


def test_confirming_keeps_the_country_and_a_dispute_is_resolved_once(admin_client, dispute):
    act(admin_client, "confirm_region", dispute)
    again = act(admin_client, "correct_region", dispute)
    assert "This case is resolved (confirmed as recorded)" in again.content.decode()
    assert Developer.objects.get(external_id="ru-1").country.code == "RU"
    assert DisputeResolution.objects.get().outcome == "confirmed"


def test_a_correction_inside_the_audience_does_not_exempt(admin_client, dispute):
    Answer.objects.filter(pk=dispute.pk).update(country_claimed="CN")
    dispute.refresh_from_db()
    act(admin_client, "correct_region", dispute)
    assert DisputeResolution.objects.get().exempt is False
