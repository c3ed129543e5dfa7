"""The approver and the sender see every version a template can produce: each condition
on developer values, with a developer of the audience for each branch."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from memo_service.memos.approval import memo_request_approval
from memo_service.memos.compose.versions import memo_versions
from memo_service.memos.models import Memo
from tests.conftest import approve, make_developer

pytestmark = pytest.mark.django_db

PHISHING = (
    "{% if developer.external_id == 'victim-1' %}Reply to this email with your API key."
    "{% else %}Dear {{ developer.name }}, please acknowledge.{% endif %}"
)


def branches(memo):
    return {(c.template, b.label): b.developer for c in memo_versions(memo) for b in c.branches}


def test_a_phishing_branch_for_one_developer_is_shown_to_the_approver_with_that_developer(
    client, memo, django_user_model
):
    for n in range(30):
        make_developer(f"cn-bulk-{n}", "CN")
    make_developer("victim-1", "RU")
    Memo.objects.filter(pk=memo.pk).update(text_body=PHISHING)
    author = django_user_model.objects.create_user("composer", "c@example.com", "pw-composer-1", is_staff=True)
    Memo.objects.filter(pk=memo.pk).update(author=author)
    memo_request_approval(memo=Memo.objects.get(pk=memo.pk), by=author)
    approver = django_user_model.objects.create_user("approver", "a@example.com", "pw-approver-1", is_staff=True)
    approver.groups.add(Group.objects.get(name="Approver"))
    client.force_login(approver)
    page = client.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert 'id="approve"' in page and 'id="template-versions"' in page
    assert "the text differs by developer.external_id" in page
    assert "preview for victim-1" in page  # the one developer who gets the other text
    assert "external_id: everything else" in page and "preview for cn-1" in page
    preview = client.get(reverse("admin:memos_memo_preview", args=[memo.pk]), {"developer": "victim-1"})
    assert "API key" in preview.content.decode()


def test_the_send_page_lists_each_country_branch_and_says_when_nobody_is_in_one(admin_client, memo):
    Memo.objects.filter(pk=memo.pk).update(
        html_body="{% if developer.country in ['CN', 'IR'] %}<p>Blocked.</p>{% elif developer.language == 'en' %}<p>Hi</p>{% endif %}"
    )
    memo = approve(memo)
    assert branches(memo) == {
        ("html_body", "country CN"): "cn-1",
        ("html_body", "country IR"): None,
        ("html_body", "country: everything else"): "ru-1",
        ("html_body", "language en"): "ru-1",
        ("html_body", "language: everything else"): "cn-1",
    }
    page = admin_client.get(reverse("admin:memos_memo_send", args=[memo.pk])).content.decode()
    assert "country IR: nobody in the audience" in page and "preview for ru-1" in page


def test_a_condition_through_a_variable_or_a_computed_test_is_still_listed(memo):
    make_developer("ru-long-name", "RU", name="A name longer than twenty characters")
    Memo.objects.filter(pk=memo.pk).update(
        text_body="{% set c = developer.country %}{% if c == 'RU' %}R{% endif %}\n"
        "{% if developer.name|length > 20 %}long{% endif %}\n"
        "{{ {'CN': 'a', 'RU': 'b'}[developer.country] }}\n"
        "{% if ack_url.endswith('x/') %}odd{% endif %}"
    )
    found = {c.line: c for c in memo_versions(Memo.objects.get(pk=memo.pk)) if c.template == "text_body"}
    assert [(b.label, b.developer) for b in found[1].branches] == [
        ("country RU", "ru-1"),
        ("country: everything else", "cn-1"),
    ]
    assert {(b.label, b.developer) for b in found[2].branches} == {("false", "ru-1"), ("true", "ru-long-name")}
    assert found[3].depends_on == ["developer.country"] and found[3].note
    assert found[4].depends_on == ["ack_url"] and found[4].note


def test_a_template_that_prints_values_only_has_a_single_version(memo):
    assert memo_versions(memo) == []
