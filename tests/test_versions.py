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
    # A lookup by country: rendered for every country, the versions told apart.
    labels = [b.label for b in found[3].branches]
    assert found[3].depends_on == ["developer.country"] and len(labels) == 3, labels
    assert {b.developer for b in found[3].branches} == {"cn-1", "ru-1", None}
    assert 4 not in found  # the link is one constant to templates: nothing to tell apart


def test_a_template_that_prints_values_only_has_a_single_version(memo):
    assert memo_versions(memo) == []


@pytest.mark.parametrize(
    "construct",
    [
        "{{ (developer.country == 'IR') and ' IGNORE THIS' or '' }}",
        "{{ ' IGNORE THIS' * (developer.country == 'IR') }}",
        "{% set ns = namespace(c='') %}{% set ns.c = developer.country %}{% if ns.c == 'IR' %} IGNORE THIS{% endif %}",
        "{% macro warn(c) %}{% if c == 'IR' %} IGNORE THIS{% endif %}{% endmacro %}{{ warn(developer.country) }}",
        "{% set hidden %}{{ developer.country }}{% endset %}"
        "{{ ('' ~ (hidden == 'IR')) | replace('True', ' IGNORE THIS') | replace('False', '') }}",
    ],
)
def test_text_only_some_developers_get_is_listed_with_one_of_them_whatever_the_construct(memo, construct):
    """Seen from a composer who means harm: each hides a sentence for IR's developers."""
    make_developer("ir-1", "IR", name="Reza")
    Memo.objects.filter(pk=memo.pk).update(text_body=f"Dear {{{{ developer.name }}}}.{construct}")
    memo = Memo.objects.get(pk=memo.pk)
    memo.include_countries = ["CN", "RU", "IR"]
    memo.save()
    conditions = [c for c in memo_versions(memo) if c.template == "text_body"]
    assert conditions and all(c.listed for c in conditions)
    previews = {b.developer for c in conditions for b in c.branches}
    assert "ir-1" in previews and previews & {"cn-1", "ru-1"}, [str(c) for c in conditions]


def test_text_that_depends_on_two_values_at_once_is_refused_at_save_and_at_approval(admin_client, memo):
    from memo_service.memos.approval import ApprovalRefused

    unlisted = "{% if developer.country ~ developer.language == 'IRen' %} IGNORE THIS{% endif %}"
    Memo.objects.filter(pk=memo.pk).update(text_body=unlisted)
    with pytest.raises(ApprovalRefused, match="its versions cannot all be shown to its approver: en text_body line 1"):
        approve(Memo.objects.get(pk=memo.pk))
    from tests.test_admin import memo_form

    response = admin_client.post(reverse("admin:memos_memo_add"), memo_form(slug="two-at-once", text_body=unlisted))
    assert response.status_code == 200 and not Memo.objects.filter(slug="two-at-once").exists()
    error = response.context["adminform"].form.errors["text_body"][0]
    assert (
        error.startswith("line 1: its versions cannot be listed") and "developer.country, developer.language" in error
    )
