"""Approval that can say no (memos/approval.py, admin/memo_review_pages.py): asking for
approval emails the approvers; the approver reviews the memo rendered, every version in
every language, and what changed since the last approval; approves after a confirmation
(the composer is emailed) or asks for changes with a comment (the memo is a draft again,
the composer is emailed the comment and sees it on the memo page). An edit that voids an
approval asks first and says so after."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.test import Client
from django.urls import reverse

from memo_service.memos.approval import ApprovalRefused, memo_edited, memo_request_changes
from memo_service.memos.compose.sources import memo_content_hash
from memo_service.memos.models import AuditEvent, Memo, Notification

# transaction: the emails go once a commit happens; serialized_rollback: the roles (Groups) a
# migration made survive each test's flush.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def person(django_user_model: Any, name: str, *groups: str, **extra: Any) -> tuple[Any, Client]:
    user = django_user_model.objects.create_user(
        name, f"{name}@example.com", f"pw-{name}-123", is_staff=True, first_name=name.title(), **extra
    )
    for group in groups:
        user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return user, client


@pytest.fixture
def team(django_user_model: Any, memo: Memo) -> dict[str, Any]:
    """carol writes the memo, dave (another composer) asks for its approval; anna and
    bob approve; victor only looks; a deactivated approver is told nothing."""
    people = {
        "carol": person(django_user_model, "carol", "Composer"),
        "dave": person(django_user_model, "dave", "Composer"),
        "anna": person(django_user_model, "anna", "Approver"),
        "bob": person(django_user_model, "bob", "Approver"),
        "victor": person(django_user_model, "victor", "Viewer"),
        "gone": person(django_user_model, "gone", "Approver", is_active=False),
    }
    Memo.objects.filter(pk=memo.pk).update(author=people["carol"][0])
    return people


def url(name: str, memo: Memo) -> str:
    return reverse(f"admin:memos_memo_{name}", args=[memo.pk])


def ask(team: dict[str, Any], memo: Memo, who: str = "dave") -> None:
    response = team[who][1].post(url("request_approval", memo), follow=True)
    assert response.status_code == 200
    assert Memo.objects.get(pk=memo.pk).status == "awaiting_approval"


def inbox(kind: str) -> dict[str, Any]:
    """The emails of a kind of notification sent, by address."""
    subjects = dict(Notification.objects.filter(kind=kind).values_list("subject", "kind"))
    return {m.to[0]: m for m in mail.outbox if m.subject in subjects}


def test_asking_for_approval_emails_everyone_who_may_approve_it_and_nobody_else(
    team: dict[str, Any], memo: Memo, eager: None
) -> None:
    ask(team, memo)
    sent = inbox(Notification.Kind.REVIEW_REQUESTED)
    assert set(sent) == {"anna@example.com", "bob@example.com"}  # not the composers, the viewer, the inactive
    body = sent["anna@example.com"].body
    assert sent["anna@example.com"].subject == f"Awaiting your approval: {memo.title}"
    assert f"Dave asks you to approve the memo “{memo.title}”" in body
    assert f"http://testserver/admin/memos/memo/{memo.pk}/review/" in body


def test_the_admin_index_and_the_memo_list_count_what_awaits_an_approver(team: dict[str, Any], memo: Memo) -> None:
    anna = team["anna"][1]
    assert 'id="awaiting-approval"' not in anna.get(reverse("admin:index")).content.decode()
    ask(team, memo)
    index = anna.get(reverse("admin:index")).content.decode()
    assert "1 memo awaits your approval" in index and url("review", memo) in index
    assert "1 memo awaits your approval" in anna.get(reverse("admin:memos_memo_changelist")).content.decode()
    # Not the composer who asked, nor a viewer: they cannot approve it.
    for who in ("dave", "victor"):
        assert 'id="awaiting-approval"' not in team[who][1].get(reverse("admin:index")).content.decode()


def test_the_review_page_shows_every_language_rendered_not_its_template(team: dict[str, Any], memo: Memo) -> None:
    ask(team, memo)
    memo_page = team["anna"][1].get(url("change", memo)).content.decode()
    assert f'href="{url("review", memo)}" id="approve"' in memo_page  # the memo page's Approve leads here
    page = team["anna"][1].get(url("review", memo)).content.decode()
    assert "Dear Wang Wei," in page and "Traffic from China will be blocked." in page  # English, rendered
    assert "Wang Wei，您好：" in page and "来自中国的流量将被阻止。" in page  # the zh-hans translation
    assert "{{ developer" not in page
    assert 'id="review-diff"' not in page  # never approved: nothing to compare with
    assert 'id="review-approve"' in page and 'id="request-changes"' in page
    # Whoever asked sees the page, not the buttons; a viewer neither.
    for who in ("dave", "victor"):
        other = team[who][1].get(url("review", memo)).content.decode()
        assert "Dear Wang Wei," in other and 'id="review-approve"' not in other and 'id="request-changes"' not in other


def test_a_version_per_branch_is_rendered_for_a_developer_in_it(team: dict[str, Any], memo: Memo) -> None:
    Memo.objects.filter(pk=memo.pk).update(
        text_body="{% if developer.country == 'RU' %}Russian traffic ends.{% else %}Other traffic ends.{% endif %}"
    )
    ask(team, memo)
    page = team["anna"][1].get(url("review", memo)).content.decode()
    assert "Russian traffic ends." in page and "Other traffic ends." in page
    assert 'data-developer="ru-1"' in page and 'data-developer="cn-1"' in page


def test_an_approver_asks_for_changes_and_the_composer_is_told_and_sees_the_comment(
    team: dict[str, Any], memo: Memo, eager: None
) -> None:
    ask(team, memo)
    comment = "Say which date the block starts & link the policy <b>page</b>."
    response = team["anna"][1].post(url("request_changes", memo), {"comment": comment}, follow=True)
    assert "is a draft again" in response.content.decode()
    assert Memo.objects.get(pk=memo.pk).status == "draft"
    event = AuditEvent.objects.get(action="memo.changes_requested")
    assert event.actor == team["anna"][0] and event.detail["comment"] == comment
    sent = inbox(Notification.Kind.CHANGES_REQUESTED)
    assert set(sent) == {"carol@example.com", "dave@example.com"}  # the author and who asked
    assert sent["carol@example.com"].subject == f"Changes requested: {memo.title}"
    assert comment in sent["carol@example.com"].body  # plain text, as written: no &amp;
    page = team["carol"][1].get(url("change", memo)).content.decode()
    assert 'id="changes-requested"' in page and "Changes requested by Anna" in page
    assert "link the policy &lt;b&gt;page&lt;/b&gt;" in page  # shown as text, never as HTML
    # Asked again, the approver sees the earlier comment on the review, and that nothing changed.
    ask(team, memo, "carol")
    review = team["bob"][1].get(url("review", memo)).content.decode()
    assert "Changes asked for before" in review and 'id="review-unchanged"' in review
    Memo.objects.filter(pk=memo.pk).update(subject="Access ends")
    assert 'id="review-unchanged"' not in team["bob"][1].get(url("review", memo)).content.decode()


@pytest.mark.parametrize("comment", ["", "   \n "])
def test_a_request_for_changes_needs_a_comment(team: dict[str, Any], memo: Memo, comment: str) -> None:
    ask(team, memo)
    response = team["anna"][1].post(url("request_changes", memo), {"comment": comment})
    assert response.status_code == 400 and "a comment is required" in response.content.decode()
    assert Memo.objects.get(pk=memo.pk).status == "awaiting_approval"
    assert not AuditEvent.objects.filter(action="memo.changes_requested").exists()
    assert not Notification.objects.filter(kind=Notification.Kind.CHANGES_REQUESTED).exists()


def test_only_an_approver_who_did_not_write_it_may_ask_for_changes(
    team: dict[str, Any], memo: Memo, django_user_model: Any
) -> None:
    ask(team, memo)
    # A viewer or a composer: refused by the admin, with who may.
    for who in ("victor", "carol"):
        assert team[who][1].post(url("request_changes", memo), {"comment": "no"}).status_code == 403
    # An approver who asked for it, or edited it: refused by the write function.
    mallory, _ = person(django_user_model, "mallory", "Composer", "Approver")
    team["dave"][0].groups.add(Group.objects.get(name="Approver"))
    memo_edited(memo=memo, by=mallory, fields=["text_body"])  # back to draft
    ask(team, memo)
    for who in (mallory, team["dave"][0]):
        with pytest.raises(ApprovalRefused, match="cannot approve it"):
            memo_request_changes(memo=memo, by=who, comment="looks wrong")
    assert Memo.objects.get(pk=memo.pk).status == "awaiting_approval"


def test_a_memo_not_awaiting_approval_cannot_be_sent_back(team: dict[str, Any], memo: Memo) -> None:
    with pytest.raises(ApprovalRefused, match="is draft"):
        memo_request_changes(memo=memo, by=team["anna"][0], comment="why")
    response = team["anna"][1].post(url("request_changes", memo), {"comment": "why"})
    assert response.status_code == 400 and "is draft" in response.content.decode()
    assert not Notification.objects.exists()


def test_approval_is_confirmed_then_the_composer_is_emailed(team: dict[str, Any], memo: Memo, eager: None) -> None:
    ask(team, memo)
    anna = team["anna"][1]
    review = anna.get(url("review", memo)).content.decode()
    reviewed = review.split("?reviewed=")[1].split('"')[0]
    confirm = anna.get(url("approve", memo), {"reviewed": reviewed}).content.decode()
    assert 'id="confirm-approve"' in confirm and "Carol and Dave will be emailed" in confirm
    assert Memo.objects.get(pk=memo.pk).status == "awaiting_approval"  # a GET approves nothing
    bare = anna.post(url("approve", memo), follow=True)  # a post that names no text, not from that page
    assert "Approve from the confirmation page" in bare.content.decode()
    assert Memo.objects.get(pk=memo.pk).status == "awaiting_approval"
    anna.post(url("approve", memo), {"content_hash": reviewed})
    assert Memo.objects.get(pk=memo.pk).status == "approved"
    sent = inbox(Notification.Kind.APPROVED)
    assert set(sent) == {"carol@example.com", "dave@example.com"}
    assert f"Anna approved the memo “{memo.title}”" in sent["carol@example.com"].body


def test_an_approval_of_text_that_changed_since_the_review_is_refused(team: dict[str, Any], memo: Memo) -> None:
    ask(team, memo)
    anna = team["anna"][1]
    reviewed = anna.get(url("review", memo)).content.decode().split("?reviewed=")[1].split('"')[0]
    # The text changes under the approver's eyes (the database, or an edit racing the review).
    Memo.objects.filter(pk=memo.pk).update(text_body="Send us your API keys.")
    assert 'id="approve-changed"' in anna.get(url("approve", memo), {"reviewed": reviewed}).content.decode()
    response = anna.post(url("approve", memo), {"content_hash": reviewed}, follow=True)
    assert "changed since you reviewed it" in response.content.decode()
    assert Memo.objects.get(pk=memo.pk).status == "awaiting_approval"


def test_a_reapproval_shows_what_changed_since_the_last_approval(team: dict[str, Any], memo: Memo) -> None:
    ask(team, memo)
    team["anna"][1].post(url("approve", memo), {"content_hash": memo_content_hash(memo)})
    assert Memo.objects.get(pk=memo.pk).status == "approved"
    Memo.objects.filter(pk=memo.pk).update(
        text_body="Dear {{ developer.name }},\nTraffic from {{ developer.country_name }} will be blocked on 9 July.",
        effective_date="2027-08-01",
    )
    memo_edited(memo=memo, by=team["carol"][0], fields=["text_body"])
    ask(team, memo, "carol")
    page = team["bob"][1].get(url("review", memo)).content.decode()
    assert 'id="review-diff"' in page and "Changed: effective_date, text_body (en)." in page
    assert "<th>effective_date</th><td><del>2027-07-09</del></td><td><ins>2027-08-01</ins></td>" in page
    assert "<del>− Traffic from China will be blocked.</del>" in page
    assert "<ins>+ Traffic from China will be blocked on 9 July.</ins>" in page
    assert "来自中国的流量将被阻止" not in page.split('id="review-diff"')[1].split("</div>")[0]  # zh-hans unchanged


def _change_form(memo: Memo, **overrides: Any) -> dict[str, Any]:
    assert memo.ack_deadline is not None  # the fixture's memo has one
    data = {
        "title": memo.title,
        "slug": memo.slug,
        "subject": memo.subject,
        "html_body": memo.html_body,
        "text_body": memo.text_body,
        "effective_date": str(memo.effective_date),
        "ack_deadline_0": memo.ack_deadline.strftime("%Y-%m-%d"),
        "ack_deadline_1": memo.ack_deadline.strftime("%H:%M:%S"),
        "include_regions": [r.pk for r in memo.include_regions.all()],
        "audience_basis": memo.audience_basis,
        "traffic_days": memo.traffic_days,
        "traffic_min_requests": memo.traffic_min_requests,
        **({"active_only": "on"} if memo.active_only else {}),
        "translations-TOTAL_FORMS": "0",
        "translations-INITIAL_FORMS": "0",
        "translations-MIN_NUM_FORMS": "0",
        "translations-MAX_NUM_FORMS": "1000",
    }
    return data | overrides


def test_an_edit_that_voids_an_approval_warns_asks_and_says_so_after(team: dict[str, Any], memo: Memo) -> None:
    ask(team, memo)
    team["anna"][1].post(url("approve", memo), {"content_hash": memo_content_hash(memo)})
    carol = team["carol"][1]
    page = carol.get(url("change", memo)).content.decode()
    assert 'id="void-warning"' in page and "Saving a change voids the approval by Anna" in page
    memo.refresh_from_db()
    # Saved without ticking the box: refused, nothing changes.
    response = carol.post(url("change", memo), _change_form(memo, subject="New subject"))
    assert response.status_code == 200 and "tick the box in the warning above" in response.content.decode()
    assert (Memo.objects.get(pk=memo.pk).status, Memo.objects.get(pk=memo.pk).subject) == ("approved", memo.subject)
    # Ticked: saved, the approval void, and the message says so.
    response = carol.post(
        url("change", memo), _change_form(memo, subject="New subject", void_approval="on"), follow=True
    )
    text = response.content.decode()
    assert "The approval of “Regions blocked” by Anna is void" in text
    assert (Memo.objects.get(pk=memo.pk).status, Memo.objects.get(pk=memo.pk).subject) == ("draft", "New subject")
    # A draft has nothing to void: no warning, no box.
    assert 'id="void-warning"' not in carol.get(url("change", memo)).content.decode()


def test_a_save_with_no_change_voids_nothing_and_asks_nothing(team: dict[str, Any], memo: Memo) -> None:
    ask(team, memo)
    team["anna"][1].post(url("approve", memo), {"content_hash": memo_content_hash(memo)})
    memo.refresh_from_db()
    response = team["carol"][1].post(url("change", memo), _change_form(memo), follow=True)
    assert response.status_code == 200 and "tick the box" not in response.content.decode()
    assert Memo.objects.get(pk=memo.pk).status == "approved"


def test_a_change_to_a_translation_alone_is_confirmed_too(team: dict[str, Any], memo: Memo) -> None:
    ask(team, memo)
    team["anna"][1].post(url("approve", memo), {"content_hash": memo_content_hash(memo)})
    memo.refresh_from_db()
    zh = memo.translations.get()
    translation = {
        "translations-TOTAL_FORMS": "1",
        "translations-INITIAL_FORMS": "1",
        "translations-0-id": str(zh.pk),
        "translations-0-memo": str(memo.pk),
        "translations-0-language": "zh-hans",
        "translations-0-subject": "访问将于七月终止",
        "translations-0-html_body": zh.html_body,
        "translations-0-text_body": zh.text_body,
    }
    response = team["carol"][1].post(url("change", memo), _change_form(memo) | translation)
    assert "tick the box in the warning above" in response.content.decode()
    assert memo.translations.get().subject == zh.subject and Memo.objects.get(pk=memo.pk).status == "approved"
    team["carol"][1].post(url("change", memo), _change_form(memo, void_approval="on") | translation)
    assert memo.translations.get().subject == "访问将于七月终止" and Memo.objects.get(pk=memo.pk).status == "draft"


def test_the_approved_text_is_rendered_from_the_record_dates_unset_included(memo: Memo) -> None:
    from memo_service.memos.admin.memo_review import approved_memo
    from memo_service.memos.compose.sources import memo_content

    content = memo_content(memo) | {"effective_date": "None", "ack_deadline": "None", "title": "Before"}
    content["languages"]["zh-hans"]["subject"] = "旧的主题"
    shadow = approved_memo(memo, content)
    assert (shadow.title, shadow.effective_date, shadow.ack_deadline) == ("Before", None, None)
    assert [t.subject for t in shadow.translations.all()] == ["旧的主题"]
    assert memo.translations.get().subject != "旧的主题"  # the memo itself is untouched


def test_past_its_limit_the_review_says_how_many_versions_it_left_to_the_preview(
    team: dict[str, Any], memo: Memo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memo_service.memos.admin import memo_review

    monkeypatch.setattr(memo_review, "MAX_VERSIONS", 1)
    ask(team, memo)
    page = team["anna"][1].get(url("review", memo)).content.decode()
    assert page.count('class="review-version"') == 1
    assert "1 more version not shown here" in page


def test_a_viewer_may_read_the_review_but_neither_approve_nor_see_the_confirmation(
    team: dict[str, Any], memo: Memo
) -> None:
    ask(team, memo)
    victor = team["victor"][1]
    assert victor.get(url("review", memo)).status_code == 200
    refused = victor.get(url("approve", memo))
    assert refused.status_code == 403 and "takes the Approver role" in refused.content.decode()
    assert victor.post(url("approve", memo)).status_code == 403
    assert Memo.objects.get(pk=memo.pk).status == "awaiting_approval"
