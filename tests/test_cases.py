"""Cases (memos/cases/): every help request, dispute and objection opens one; staff
assign it, note, reply (an email in the developer's language) and resolve it; a
dispute's case decides it with a rationale the developer is emailed. Replies and
decisions are chained as evidence. The admin pages: the list, the case page, the
confirmation of a decision, the memo's dashboard, and a Viewer who may only read."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.test import TestCase
from django.urls import reverse

from memo_service.developers.erasure import developer_erase
from memo_service.developers.models import Developer
from memo_service.memos.cases.cases import (
    CaseInvalid,
    case_assign,
    case_decide_dispute,
    case_note,
    case_reply,
    case_resolve,
    case_set_status,
)
from memo_service.memos.evidence.sequencer import evidence_seal
from memo_service.memos.evidence.verify import evidence_verify
from memo_service.memos.models import (
    Answer,
    Case,
    CaseEntry,
    DisputeResolution,
    EvidenceRecord,
    Memo,
    Notification,
)
from tests.conftest import Provider, answered, sent_memo
from tests.test_migrations import installation

pytestmark = pytest.mark.django_db


def staff(username: str, group: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", f"pw-{username}-123", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return User.objects.get(pk=user.pk)  # a fresh row: no permissions cached from before the group


@pytest.fixture
def carol(db: None) -> User:
    return staff("carol", "Composer")


@pytest.fixture
def sent(memo: Memo, developers: dict[str, Developer]) -> Memo:
    return sent_memo(memo)


@pytest.fixture
def help_case(sent: Memo, developers: dict[str, Developer]) -> Case:
    answered(sent, developers["cn"], "needs_help", comment="Our servers are in Hong Kong, what do we do?")
    return Case.objects.get(developer=developers["cn"])


@pytest.fixture
def dispute_case(sent: Memo, developers: dict[str, Developer]) -> Case:
    answered(sent, developers["ru"], "disputes_region", country="KZ", comment="We moved to Almaty")
    return Case.objects.get(developer=developers["ru"])


def case_notifications() -> Any:
    """The notifications of cases: replies and outcomes (an answer may have its receipt)."""
    return Notification.objects.filter(kind__in=[Notification.Kind.CASE_REPLY, Notification.Kind.DISPUTE_OUTCOME])


def notifications_sent() -> list[Any]:
    """The emails of case_notifications (the memo's own and receipts are in the outbox too)."""
    ids = {str(pk) for pk in case_notifications().values_list("pk", flat=True)}
    return [m for m in mail.outbox if m.extra_headers.get("X-Memo-Notification") in ids]


def seal(memo: Memo) -> None:
    with TestCase.captureOnCommitCallbacks(execute=True):
        evidence_seal(memo_id=memo.pk)


def test_help_disputes_and_objections_open_cases_and_acknowledgements_do_not(
    sent: Memo, developers: dict[str, Developer]
) -> None:
    answered(sent, developers["cn"], "needs_help", comment="help")
    answered(sent, developers["ru"], "disputes_region", country="KZ")
    answered(sent, developers["ru"], "objects", comment="We disagree")
    answered(sent, developers["cn"], "acknowledged")
    kinds = sorted(Case.objects.values_list("developer__external_id", "kind", "status"))
    assert kinds == [("cn-1", "help", "open"), ("ru-1", "dispute", "open"), ("ru-1", "objection", "open")]


def test_a_case_moves_from_open_to_waiting_to_resolved_and_then_stays(help_case: Case, carol: User) -> None:
    case_assign(case=help_case, by=carol, assignee=carol)
    case_note(case=help_case, by=carol, text="Check their traffic first")
    case_set_status(case=help_case, by=carol, status="waiting")
    case_set_status(case=help_case, by=carol, status="open")
    case_resolve(case=help_case, by=carol, outcome="answered", rationale="Told them how to move")
    help_case.refresh_from_db()
    assert (help_case.status, help_case.outcome, help_case.resolved_by, help_case.assignee) == (
        "resolved",
        "answered",
        carol,
        carol,
    )
    assert list(help_case.entries.values_list("kind", "text")) == [
        ("assigned", "carol"),
        ("note", "Check their traffic first"),
        ("status", "waiting"),
        ("status", "open"),
        ("decision", "Told them how to move"),
    ]
    for write in (
        lambda: case_set_status(case=help_case, by=carol, status="open"),
        lambda: case_reply(case=help_case, by=carol, text="more"),
        lambda: case_resolve(case=help_case, by=carol, outcome="noted", rationale="again"),
    ):
        with pytest.raises(CaseInvalid, match="resolved"):
            write()
    assert help_case.entries.count() == 5


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda c, by: case_reply(case=c, by=by, text="   "), "Write the reply"),
        (lambda c, by: case_note(case=c, by=by, text=""), "Write the note"),
        (lambda c, by: case_resolve(case=c, by=by, outcome="answered", rationale=" "), "rationale is required"),
        (lambda c, by: case_resolve(case=c, by=by, outcome="maybe", rationale="x"), "Choose an outcome"),
        (lambda c, by: case_set_status(case=c, by=by, status="resolved"), "resolve a case with its outcome"),
        (lambda c, by: case_decide_dispute(case=c, by=by, outcome="corrected", rationale="x"), "Only a dispute"),
        (lambda c, by: case_reply(case=c, by=by, text="x" * 5001), "under 5000"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(help_case: Case, carol: User, write: Any, message: str) -> None:
    with pytest.raises(CaseInvalid, match=message):
        write(help_case, carol)
    help_case.refresh_from_db()
    assert help_case.status == "open" and not help_case.entries.exists() and not case_notifications().exists()


def test_only_someone_who_handles_cases_can_be_assigned(help_case: Case, carol: User) -> None:
    viewer = staff("victor", "Viewer")
    with pytest.raises(CaseInvalid, match="cannot handle cases"):
        case_assign(case=help_case, by=carol, assignee=viewer)
    case_assign(case=help_case, by=carol, assignee=carol)
    case_assign(case=help_case, by=carol, assignee=None)
    assert list(help_case.entries.values_list("text", flat=True)) == ["carol", ""]


def test_a_reply_is_emailed_in_the_developers_language_and_waits_for_them(
    help_case: Case, carol: User, eager: None
) -> None:
    with TestCase.captureOnCommitCallbacks(execute=True):  # the transaction commits: the email goes
        entry = case_reply(case=help_case, by=carol, text="Route your traffic through Singapore.\nThanks & regards")
    assert entry.notification is not None
    entry.notification.refresh_from_db()
    help_case.refresh_from_db()
    assert help_case.status == "waiting"
    [email] = notifications_sent()
    assert email.to == ["cn-1@example.com"]
    assert email.subject == "回复：您对“来自中国的访问将被阻止”的答复"  # the subject they were sent
    assert "Route your traffic through Singapore.\nThanks & regards" in email.body  # no HTML escaping
    assert "这是我们对您就通知“来自中国的访问将被阻止”所提内容的回复。" in email.body
    assert entry.notification.status == "sent"


def test_a_reply_to_an_erased_developer_is_refused(help_case: Case, carol: User) -> None:
    developer_erase(developer=help_case.developer)
    with pytest.raises(CaseInvalid, match="erased"):
        case_reply(case=help_case, by=carol, text="Hello")
    assert not case_notifications().exists() and not help_case.entries.exists()


def test_correcting_a_region_keeps_both_countries_and_emails_the_outcome(
    dispute_case: Case, carol: User, eager: None
) -> None:
    with TestCase.captureOnCommitCallbacks(execute=True):
        case_decide_dispute(
            case=dispute_case, by=carol, outcome="corrected", rationale="Your invoices are from Almaty."
        )
    dispute_case.refresh_from_db()
    assert (dispute_case.status, dispute_case.outcome, dispute_case.rationale) == (
        "resolved",
        "corrected",
        "Your invoices are from Almaty.",
    )
    resolution = DisputeResolution.objects.get()
    assert (resolution.previous_country.code, resolution.new_country.code, resolution.exempt) == ("RU", "KZ", True)
    assert resolution.note == "Your invoices are from Almaty."
    assert Developer.objects.get(external_id="ru-1").country.code == "KZ"
    [email] = notifications_sent()
    assert (
        email.to == ["ru-1@example.com"]
        and email.subject == "Your dispute about “Access from Russia ends 2027-07-09” is decided"
    )
    assert "We corrected your region from Russia to Kazakhstan. This memo no longer applies to you." in email.body
    assert "Why: Your invoices are from Almaty." in email.body
    decision = dispute_case.entries.get()
    assert decision.notification is not None
    assert (decision.kind, decision.notification.kind) == ("decision", "dispute_outcome")


def test_a_decision_needs_a_rationale_and_is_made_once(dispute_case: Case, carol: User) -> None:
    with pytest.raises(CaseInvalid, match="rationale is required"):
        case_decide_dispute(case=dispute_case, by=carol, outcome="corrected", rationale="")
    with pytest.raises(CaseInvalid, match="Choose a decision: region corrected"):
        case_decide_dispute(case=dispute_case, by=carol, outcome="shrug", rationale="x")
    with pytest.raises(CaseInvalid, match="A dispute is decided"):
        case_resolve(case=dispute_case, by=carol, outcome="answered", rationale="x")
    assert not DisputeResolution.objects.exists()
    case_decide_dispute(case=dispute_case, by=carol, outcome="confirmed", rationale="Your traffic is from Moscow.")
    with pytest.raises(CaseInvalid, match="resolved"):
        case_decide_dispute(case=dispute_case, by=carol, outcome="corrected", rationale="Changed my mind")
    assert DisputeResolution.objects.get().outcome == "confirmed"
    assert Developer.objects.get(external_id="ru-1").country.code == "RU"


def test_a_dispute_decided_in_chinese_through_mailgun(
    sent: Memo, developers: dict[str, Developer], carol: User, mailgun: Provider, eager: None
) -> None:
    answered(sent, developers["cn"], "disputes_region", country="SG", comment="我们在新加坡")
    case = Case.objects.get(developer=developers["cn"])
    with TestCase.captureOnCommitCallbacks(execute=True):
        case_decide_dispute(case=case, by=carol, outcome="corrected", rationale="发票地址在新加坡。")
    [call] = [a for a in mailgun.accepted if a.first("subject") == "您对“来自中国的访问将被阻止”的申诉已有决定"]
    assert call.first("to") == "cn-1@example.com"
    assert call.first("subject") == "您对“来自中国的访问将被阻止”的申诉已有决定"
    assert "我们已将您的地区从中国更正为新加坡。" in call.first("text") and "理由： 发票地址在新加坡。" in call.first(
        "text"
    )
    assert case_notifications().get().status == "sent"


def test_replies_and_decisions_are_chained_as_evidence_that_verifies(
    help_case: Case, dispute_case: Case, carol: User, eager: None
) -> None:
    memo = help_case.memo
    case_note(case=help_case, by=carol, text="internal: stays out of the chain")
    case_reply(case=help_case, by=carol, text="Here is how")
    case_decide_dispute(case=dispute_case, by=carol, outcome="exempted", rationale="A proxy's traffic")
    seal(memo)
    records = list(EvidenceRecord.objects.filter(memo=memo, kind="case").order_by("seq"))
    assert [(r.payload["entry"], r.payload["case_kind"]) for r in records] == [
        ("reply", "help"),
        ("decision", "dispute"),
    ]
    reply = CaseEntry.objects.get(kind="reply")
    assert reply.notification is not None
    assert records[0].payload["notification_hash"] == reply.notification.text_hash
    assert records[1].payload["outcome"] == "exempted" and records[1].payload["rationale"] == "A proxy's traffic"
    result = evidence_verify(memo)
    assert result.ok, result.summary()


# The admin pages.


def login(client: Any, user: User) -> Any:
    client.force_login(user)
    return client


def test_the_case_list_filters_assigned_to_me_and_shows_age(client: Any, help_case: Case, carol: User) -> None:
    other = staff("dave", "Composer")
    case_assign(case=help_case, by=carol, assignee=carol)
    login(client, other)
    url = reverse("admin:memos_case_changelist")
    assert url == "/admin/memos/case/"
    everyone = client.get(url).content.decode()
    assert "cn-1" in everyone and "help request" in everyone
    assert "cn-1" not in client.get(url + "?assigned=me").content.decode()
    login(client, carol)
    assert "cn-1" in client.get(url + "?assigned=me").content.decode()


def test_the_case_page_assigns_replies_and_shows_history(client: Any, help_case: Case, carol: User) -> None:
    login(client, carol)
    url = reverse("admin:memos_case_change", args=[help_case.pk])
    page = client.get(url).content.decode()
    assert "Our servers are in Hong Kong" in page and "Help request #" in page
    client.post(reverse("admin:memos_case_assign", args=[help_case.pk]), {"assignee": "me"})
    response = client.post(
        reverse("admin:memos_case_reply", args=[help_case.pk]), {"text": "Use Singapore"}, follow=True
    )
    html = response.content.decode()
    assert "Reply emailed to the developer" in html and "Use Singapore" in html
    help_case.refresh_from_db()
    assert (help_case.assignee, help_case.status) == (carol, "waiting")
    empty = client.post(reverse("admin:memos_case_reply", args=[help_case.pk]), {"text": ""}, follow=True)
    assert "Write the reply." in empty.content.decode() and help_case.entries.count() == 2


def test_deciding_a_dispute_asks_for_confirmation_first(client: Any, dispute_case: Case, carol: User) -> None:
    login(client, carol)
    decide = reverse("admin:memos_case_decide", args=[dispute_case.pk])
    page = client.get(reverse("admin:memos_case_change", args=[dispute_case.pk])).content.decode()
    assert "Russia" in page and "Kazakhstan" in page and "We moved to Almaty" in page
    no_reason = client.post(decide, {"outcome": "corrected", "rationale": ""}, follow=True).content.decode()
    assert "rationale is required" in no_reason
    confirm = client.post(decide, {"outcome": "corrected", "rationale": "Invoices"}).content.decode()
    assert "Russia" in confirm and "Kazakhstan" in confirm and 'name="confirmed"' in confirm
    assert not DisputeResolution.objects.exists()
    done = client.post(decide, {"outcome": "corrected", "rationale": "Invoices", "confirmed": "1"}, follow=True)
    html = done.content.decode()
    assert "Decided: region corrected" in html
    resolution = DisputeResolution.objects.get()
    assert (resolution.previous_country.code, resolution.new_country.code) == ("RU", "KZ")
    # Both countries stay on the case page and in the list.
    assert "Russia" in html and "Kazakhstan" in html
    listing = client.get(reverse("admin:memos_case_changelist")).content.decode()
    assert "RU → KZ" in listing


def test_a_viewer_reads_cases_and_every_post_is_refused(client: Any, dispute_case: Case) -> None:
    login(client, staff("victor", "Viewer"))
    page = client.get(reverse("admin:memos_case_change", args=[dispute_case.pk]))
    assert page.status_code == 200 and "We moved to Almaty" in page.content.decode()
    assert 'name="rationale"' not in page.content.decode()
    for name, data in [
        ("assign", {"assignee": "me"}),
        ("note", {"text": "peek"}),
        ("reply", {"text": "hi"}),
        ("status", {"status": "waiting"}),
        ("resolve", {"outcome": "answered", "rationale": "x"}),
        ("decide", {"outcome": "exempted", "rationale": "x", "confirmed": "1"}),
    ]:
        assert client.post(reverse(f"admin:memos_case_{name}", args=[dispute_case.pk]), data).status_code == 403
    dispute_case.refresh_from_db()
    assert (dispute_case.status, dispute_case.assignee) == ("open", None)
    assert not dispute_case.entries.exists() and not DisputeResolution.objects.exists()
    assert not case_notifications().exists()


def test_the_internet_cannot_post_to_a_case(client: Any, dispute_case: Case) -> None:
    response = client.post(reverse("admin:memos_case_note", args=[dispute_case.pk]), {"text": "spam"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not dispute_case.entries.exists()


def test_the_dashboard_lists_open_cases_with_their_age(admin_client: Any, help_case: Case) -> None:
    page = admin_client.get(reverse("admin:memos_memo_dashboard", args=[help_case.memo_id])).content.decode()
    assert 'id="open-cases"' in page and "cn-1" in page
    assert reverse("admin:memos_case_change", args=[help_case.pk]) in page


def test_the_old_dispute_page_sends_people_to_the_case(admin_client: Any, dispute_case: Case) -> None:
    answer = Answer.objects.get(pk=dispute_case.answer_id)
    response = admin_client.get(reverse("admin:memos_dispute_change", args=[answer.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:memos_case_change", args=[dispute_case.pk])


def test_the_answer_and_dispute_lists_link_each_row_to_its_case(admin_client: Any, dispute_case: Case) -> None:
    link = reverse("admin:memos_case_change", args=[dispute_case.pk])
    for name in ("answer", "dispute"):
        page = admin_client.get(reverse(f"admin:memos_{name}_changelist")).content.decode()
        assert f'href="{link}"' in page and "(open)" in page, name
    answer_page = admin_client.get(reverse("admin:memos_answer_change", args=[dispute_case.answer_id]))
    assert "Disputes region: ru-1 on “Regions blocked”" in answer_page.content.decode()
    title = answer_page.content.decode().split("<title>")[1].split("</title>")[0]
    assert title == "Disputes region: ru-1 on “Regions blocked” | memo-service"


CASES_BEFORE = """
import django
django.setup()
from memo_service.memos.models import Memo  # noqa: F401  (the app is loaded)
from django.db.migrations.executor import MigrationExecutor
from django.db import connection
old = MigrationExecutor(connection).loader.project_state([("memos", "0022_audience_check_progress")]).apps
Developer, Answer = old.get_model("developers", "Developer"), old.get_model("memos", "Answer")
memo = old.get_model("memos", "Memo").objects.create(title="Regions", slug="regions", status="sent")
cn, ru, us = (Developer.objects.create(external_id=c, email=f"{c}@example.com", country=c[:2].upper()) for c in ("cn-1", "ru-1", "us-1"))
Answer.objects.create(memo=memo, developer=cn, response="needs_help", comment="help", content_hash="h" * 64)
Answer.objects.create(memo=memo, developer=us, response="acknowledged", content_hash="h" * 64)
dispute = Answer.objects.create(memo=memo, developer=ru, response="disputes_region", country_claimed="KZ", content_hash="h" * 64)
old.get_model("memos", "DisputeResolution").objects.create(answer=dispute, outcome="confirmed", note="Moscow traffic")
"""
CASES_AFTER = """
import django
django.setup()
from django.contrib.auth.models import Group
from memo_service.memos.models import Case
print(sorted(Case.objects.values_list("developer__external_id", "kind", "status", "outcome", "rationale")))
for name in ("Composer", "Approver", "Viewer"):
    print(name, sorted(Group.objects.get(name=name).permissions.filter(codename__endswith="_case").values_list("codename", flat=True)))
"""


@pytest.mark.process
def test_answers_given_before_cases_get_theirs_and_composers_handle_them(tmp_path: Any) -> None:
    run = installation(tmp_path)
    run("manage.py", "migrate", "-v0", "memos", "0022_audience_check_progress")
    run("-c", CASES_BEFORE)
    run("manage.py", "migrate", "-v0")
    assert run("-c", CASES_AFTER).splitlines() == [
        "[('cn-1', 'help', 'open', '', ''), ('ru-1', 'dispute', 'resolved', 'confirmed', 'Moscow traffic')]",
        "Composer ['change_case', 'view_case']",
        "Approver ['view_case']",
        "Viewer ['view_case']",
    ]


def test_the_admin_index_counts_open_cases(admin_client: Any, help_case: Case, dispute_case: Case) -> None:
    assert "Cases (2 open)" in admin_client.get(reverse("admin:index")).content.decode()
    case_resolve(case=help_case, by=None, outcome="answered", rationale="Answered by phone")
    assert "Cases (1 open)" in admin_client.get(reverse("admin:index")).content.decode()
    memos_index = admin_client.get(reverse("admin:app_list", args=["memos"])).content.decode()
    assert "Cases (1 open)" in memos_index


@pytest.mark.parametrize("assignee", ["nobody?", "999999", "-1"])
def test_assigning_someone_not_on_the_list_is_refused_and_changes_nothing(
    client: Any, help_case: Case, carol: User, assignee: str
) -> None:
    case_assign(case=help_case, by=carol, assignee=carol)
    login(client, carol)
    response = client.post(reverse("admin:memos_case_assign", args=[help_case.pk]), {"assignee": assignee}, follow=True)
    assert "Choose someone from the list." in response.content.decode()
    help_case.refresh_from_db()
    assert help_case.assignee == carol and help_case.entries.count() == 1
