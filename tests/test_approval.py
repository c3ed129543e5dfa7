"""Two people: a composer writes and sends, an approver approves; a viewer only looks."""

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from memo_service.memos import approval
from memo_service.memos.compose.sources import memo_content_hash
from memo_service.memos.models import AuditEvent, Delivery, Memo
from memo_service.memos.send import dispatch, schedule
from tests.conftest import answered, memo_in, sent_memo

pytestmark = pytest.mark.django_db


def login(django_user_model, name, group):
    user = django_user_model.objects.create_user(name, f"{name}@example.com", f"pw-{name}-123", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return user, client


@pytest.fixture
def people(django_user_model, memo):
    composer, composer_client = login(django_user_model, "carol", "Composer")
    approver, approver_client = login(django_user_model, "anna", "Approver")
    viewer, viewer_client = login(django_user_model, "victor", "Viewer")
    Memo.objects.filter(pk=memo.pk).update(author=composer)
    return {
        "composer": composer_client,
        "approver": approver_client,
        "viewer": viewer_client,
        "users": {"composer": composer, "approver": approver},
    }


def post(client, name, memo):
    """Press the button `name` of the memo's page; approving, as an approver does, from the
    confirmation page (which names the text approved by its hash)."""
    data: dict[str, str] = {}
    if name == "approve":
        page = client.get(reverse("admin:memos_memo_approve", args=[memo.pk]))
        found = re.search(r'name="content_hash" value="([0-9a-f]*)"', page.content.decode())
        data = {"content_hash": found.group(1)} if found else {"content_hash": memo_content_hash(memo)}
    return client.post(reverse(f"admin:memos_memo_{name}", args=[memo.pk]), data, follow=True)


def status(memo):
    return Memo.objects.get(pk=memo.pk).status


def test_a_composer_asks_an_approver_approves_and_the_composer_sends(people, memo):
    post(people["composer"], "request_approval", memo)
    assert status(memo) == "awaiting_approval"
    page = people["approver"].get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert 'id="approve"' in page
    post(people["approver"], "approve", memo)
    memo.refresh_from_db()
    assert (memo.status, memo.approver, len(memo.content_hash)) == ("approved", people["users"]["approver"], 64)
    assert memo.approved_rules["countries"]
    assert post(people["composer"], "send", memo).status_code == 200
    assert status(memo) in ("sending", "sent")
    actions = list(
        AuditEvent.objects.filter(object_id=str(memo.pk)).order_by("at", "id").values_list("action", flat=True)
    )
    assert actions == ["memo.approval_requested", "memo.approved", "memo.sent"]


def test_the_author_cannot_approve_their_own_memo(people, memo, django_user_model):
    composer = people["users"]["composer"]
    composer.groups.add(Group.objects.get(name="Approver"))
    post(people["composer"], "request_approval", memo)
    response = post(people["composer"], "approve", memo)
    assert "the author of a memo cannot approve it" in response.content.decode().lower()
    assert status(memo) == "awaiting_approval"


def test_a_viewer_can_look_but_not_edit_approve_or_send(people, memo):
    viewer = people["viewer"]
    assert viewer.get(reverse("admin:memos_memo_change", args=[memo.pk])).status_code == 200
    viewer.post(reverse("admin:memos_memo_change", args=[memo.pk]), {"title": "hacked"})
    assert Memo.objects.get(pk=memo.pk).title != "hacked"
    post(people["composer"], "request_approval", memo)
    assert post(viewer, "approve", memo).status_code == 403
    post(people["approver"], "approve", memo)
    assert post(viewer, "send", memo).status_code == 403
    assert status(memo) == "approved" and not Delivery.objects.exists()


def test_an_approver_cannot_send(people, memo):
    post(people["composer"], "request_approval", memo)
    post(people["approver"], "approve", memo)
    assert post(people["approver"], "send", memo).status_code == 403


def test_editing_an_approved_memo_returns_it_to_draft(people, memo):
    post(people["composer"], "request_approval", memo)
    post(people["approver"], "approve", memo)
    approval.memo_edited(memo=memo, by=people["users"]["composer"], fields=["subject"])
    memo.refresh_from_db()
    assert (memo.status, memo.approver, memo.content_hash) == ("draft", None, "")
    assert AuditEvent.objects.filter(action="memo.approval_voided").exists()
    with pytest.raises(Exception, match="only an approved memo can be sent"):
        call_command("send_memo", memo.slug)


def test_a_scheduled_send_fires_when_due_and_can_be_cancelled_before(
    people, memo, eager, django_capture_on_commit_callbacks, clock
):
    post(people["composer"], "request_approval", memo)
    post(people["approver"], "approve", memo)
    at = timezone.now() + dt.timedelta(hours=2)
    local = timezone.localtime(at)
    people["composer"].post(
        reverse("admin:memos_memo_schedule", args=[memo.pk]),
        {"send_at_0": local.strftime("%Y-%m-%d"), "send_at_1": local.strftime("%H:%M:%S")},
    )
    memo.refresh_from_db()
    assert memo.status == "scheduled" and abs((memo.scheduled_at - at).total_seconds()) < 1
    assert dispatch.memos_send_scheduled() == []  # not yet
    post(people["composer"], "unschedule", memo)
    assert status(memo) == "approved"

    schedule.memo_schedule(memo=memo, at=timezone.now() + dt.timedelta(seconds=1), by=None)
    clock.move_to(timezone.now() + dt.timedelta(seconds=2))  # its time has come
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch.memos_send_scheduled() == [memo.pk]
    assert status(memo) == "sent" and Delivery.objects.count() == 2


def test_a_time_in_the_past_cannot_be_scheduled(people, memo):
    post(people["composer"], "request_approval", memo)
    post(people["approver"], "approve", memo)
    with pytest.raises(approval.ApprovalRefused, match="in the future"):
        schedule.memo_schedule(memo=memo, at=timezone.now() - dt.timedelta(minutes=1), by=None)


def test_someone_who_edited_or_submitted_the_memo_cannot_approve_it(people, memo, django_user_model):
    approver = people["users"]["approver"]
    approval.memo_edited(memo=memo, by=approver, fields=["subject"])  # the approver edited it
    post(people["composer"], "request_approval", memo)
    response = post(people["approver"], "approve", memo)
    assert "cannot approve it" in response.content.decode().lower()
    assert status(memo) == "awaiting_approval"


def test_a_viewer_cannot_export_evidence_or_send_tests(people, memo):
    assert people["viewer"].get(reverse("admin:memos_memo_evidence", args=[memo.pk, "csv"])).status_code == 403
    preview = reverse("admin:memos_memo_preview", args=[memo.pk])
    assert people["viewer"].get(preview).status_code == 200
    assert people["viewer"].post(preview, {"developer": "cn-1"}).status_code == 403
    assert people["viewer"].get("/admin/developers/developer/export/").status_code == 403


def test_a_viewer_is_offered_only_what_they_may_do_and_a_refusal_explains_itself(people, memo):
    sent_memo(memo)
    page = people["viewer"].get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert "Dashboard" in page and "Evidence CSV" not in page and "Evidence JSON" not in page
    preview = people["viewer"].get(reverse("admin:memos_memo_preview", args=[memo.pk])).content.decode()
    assert "Send a test" not in preview
    assert "Evidence CSV" in people["composer"].get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert "Send a test" in people["composer"].get(reverse("admin:memos_memo_preview", args=[memo.pk])).content.decode()
    # Typed in by hand, the refusal is an admin page that says why and who may.
    refused = people["viewer"].get(reverse("admin:memos_memo_evidence", args=[memo.pk, "csv"]))
    text = refused.content.decode()
    assert refused.status_code == 403 and 'id="refusal"' in text and "Composer or Approver role" in text
    assert 'id="user-tools"' in text  # inside the admin, with its navigation
    refused = people["viewer"].post(reverse("admin:memos_memo_preview", args=[memo.pk]), {"developer": "cn-1"})
    assert refused.status_code == 403 and "takes the Composer role" in refused.content.decode()


@pytest.mark.parametrize("state", ["sending", "paused", "sent", "cancelled"])
def test_a_memo_that_can_no_longer_change_is_shown_read_only(people, memo, state):
    memo_in(memo, state)
    page = people["composer"].get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert 'name="_save"' not in page and 'name="_continue"' not in page and "Change memo" not in page
    assert f"View memo ({state})" in page and 'id="memo-readonly"' in page


def test_a_draft_is_still_edited_and_saved_by_its_composer(people, memo):
    page = people["composer"].get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert 'name="_continue"' in page and "Change memo" in page and 'id="memo-readonly"' not in page


def test_the_preview_finds_a_developer_by_name_email_or_id(people, memo, developers):
    url = reverse("admin:memos_memo_preview", args=[memo.pk])
    for q in ["olga", "RU-1@EXAMPLE", "ru-1"]:
        page = people["composer"].get(url, {"q": q}).content.decode()
        assert '<option value="ru-1" selected>' in page and 'value="cn-1"' not in page, q
    assert "Nobody in the audience matches" in people["composer"].get(url, {"q": "nobody"}).content.decode()


def test_a_scheduled_send_whose_audience_changed_does_not_go_out(people, memo, clock):
    from tests.conftest import make_developer

    post(people["composer"], "request_approval", memo)
    post(people["approver"], "approve", memo)
    schedule.memo_schedule(memo=memo, at=timezone.now() + dt.timedelta(seconds=1), by=None)
    clock.move_to(timezone.now() + dt.timedelta(seconds=2))  # its time has come
    make_developer("cn-late", "CN")
    assert dispatch.memos_send_scheduled() == []
    memo.refresh_from_db()
    assert memo.status == "approved" and "audience changed since approval" in memo.status_reason
    assert not Delivery.objects.exists()


def test_a_composer_approver_who_rewrote_the_body_cannot_approve_after_someone_else_edits_it(
    people, memo, django_user_model
):
    """The last editor is not the only one: everyone who changed the content since the
    last approval is refused."""
    mallory, mallory_client = login(django_user_model, "mallory", "Composer")
    mallory.groups.add(Group.objects.get(name="Approver"))
    approval.memo_edited(memo=memo, by=mallory, fields=["text_body"])  # asks for API keys
    approval.memo_edited(memo=memo, by=people["users"]["composer"], fields=["title"])  # a harmless edit after
    post(people["composer"], "request_approval", memo)
    response = post(mallory_client, "approve", memo)
    assert "cannot approve it" in response.content.decode().lower()
    assert status(memo) == "awaiting_approval"
    # An edit before the last approval no longer counts: after that approval, a new edit
    # by someone else, and mallory may approve the new version.
    post(people["approver"], "approve", memo)
    approval.memo_edited(memo=memo, by=people["users"]["composer"], fields=["subject"])
    post(people["composer"], "request_approval", memo)
    post(mallory_client, "approve", memo)
    assert status(memo) == "approved" and Memo.objects.get(pk=memo.pk).approver == mallory


def test_a_composer_makes_regions_and_decides_disputes_and_a_viewer_is_told_who_can(people, memo, developers):
    from memo_service.developers.models import Region

    response = people["composer"].post(
        reverse("admin:developers_region_add"), {"name": "Sanctioned", "countries": ["IR", "RU"], "source": "policy v2"}
    )
    assert response.status_code == 302 and Region.objects.filter(name="Sanctioned").exists()
    sent_memo(memo)
    answer = answered(memo, developers["ru"], "disputes_region", country="KZ")
    people["composer"].post(
        reverse("admin:memos_case_decide", args=[answer.cases.get().pk]),
        {"outcome": "confirmed", "rationale": "The invoices say Moscow", "confirmed": "1"},
    )
    assert answer.__class__.objects.get(pk=answer.pk).resolution.outcome == "confirmed"
    regions = people["viewer"].get(reverse("admin:developers_region_changelist")).content.decode()
    assert "making or changing one takes the Composer role" in regions
    cases = people["viewer"].get(reverse("admin:memos_case_changelist")).content.decode()
    assert "Handling cases (assigning, notes, replies, decisions) takes the Composer role" in cases
    assert 'id="role-hint"' not in people["composer"].get(reverse("admin:memos_case_changelist")).content.decode()


def test_a_new_users_staff_status_and_roles_are_set_on_the_add_page(admin_client, django_user_model):
    page = admin_client.get(reverse("admin:auth_user_add")).content.decode()
    assert 'name="is_staff"' in page and 'name="groups"' in page
    admin_client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "nina",
            "email": "nina@example.com",
            "usable_password": "true",
            "password1": "pw-nina-12345!",
            "password2": "pw-nina-12345!",
            "is_staff": "on",
            "groups": [Group.objects.get(name="Composer").pk],
        },
    )
    nina = django_user_model.objects.get(username="nina")
    assert nina.is_staff and [g.name for g in nina.groups.all()] == ["Composer"] and nina.email == "nina@example.com"
