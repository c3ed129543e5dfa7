"""What a platform admin does in Django admin: compose, see the audience, send, watch."""

import pytest
from django.urls import reverse

from memo_service.memos.models import AuditEvent, Delivery, Memo
from tests.conftest import approve, found, make_developer, make_memo, memo_in, sent_memo

pytestmark = pytest.mark.django_db


def memo_form(**overrides):
    data = {
        "title": "Blocked regions",
        "slug": "blocked-regions",
        "subject": "Notice for {{ developer.name }}",
        "html_body": "<p>Hello {{ developer.name }}</p>",
        "text_body": "Hello {{ developer.name }}",
        "effective_date": "2027-07-09",
        "ack_deadline_0": "2027-06-30",
        "ack_deadline_1": "23:59:00",
        "include_countries": ["CN"],
        "active_only": "on",
        "translations-TOTAL_FORMS": "0",
        "translations-INITIAL_FORMS": "0",
        "translations-MIN_NUM_FORMS": "0",
        "translations-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def test_it_saves_a_memo_whose_templates_render(admin_client, admin_user):
    response = admin_client.post(reverse("admin:memos_memo_add"), memo_form())
    assert response.status_code == 302, response.context["adminform"].form.errors
    memo = Memo.objects.get(slug="blocked-regions")
    assert memo.status == "draft" and memo.author == admin_user


def test_a_template_error_is_shown_on_its_field_with_the_line(admin_client):
    response = admin_client.post(
        reverse("admin:memos_memo_add"),
        memo_form(html_body="<p>Hello</p>\n<p>{{ developer.nmae }}</p>", text_body="{% for x in %}"),
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["html_body"][0].startswith("line 2:")
    assert "syntax error" in errors["text_body"][0]
    assert not Memo.objects.exists()


def test_a_broken_translation_is_a_form_error_too(admin_client):
    response = admin_client.post(
        reverse("admin:memos_memo_add"),
        memo_form(
            **{
                "translations-TOTAL_FORMS": "1",
                "translations-0-language": "zh-hans",
                "translations-0-subject": "{{ developer.name",
                "translations-0-html_body": "<p>好</p>",
                "translations-0-text_body": "好",
            }
        ),
    )
    assert response.status_code == 200
    assert "syntax error" in str(response.context["inline_admin_formsets"][0].formset.errors)
    assert not Memo.objects.exists()
    # The banner at the top says where: the translation, its field, a link to it, the error.
    banner = response.content.decode().split('id="error-places"')[1].split("</div>")[0]
    assert 'href="#id_translations-0-subject"' in banner and "Translation zh-hans › Subject" in banner
    assert "syntax error" in banner


def test_the_change_page_lists_template_variables_and_the_audience(admin_client, memo):
    page = admin_client.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert "developer.country_name" in page and "ack_url" in page
    assert "2 developers" in page  # CN and RU; the US developer is outside the region
    assert "CN China" in page and "RU Russia" in page


def test_the_change_page_boxes_name_the_pages_their_script_asks(admin_client, memo):
    page = admin_client.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    audience, explain = (reverse(f"admin:memos_memo_{name}", args=[memo.pk]) for name in ("audience", "explain"))
    assert f'<div id="audience-summary" data-url="{audience}" data-saved="1"><strong>2 developers</strong>' in page
    assert "<tr><td>CN China</td><td>1</td><td>1</td><td>0</td></tr>" in page
    assert f'<input id="explain-id" placeholder="external id" data-url="{explain}">' in page
    assert 'id="send-progress"' not in page  # not sent: "Not sent yet."
    sent_memo(memo)
    page = admin_client.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    progress = reverse("admin:memos_memo_progress", args=[memo.pk])
    assert f'<div id="send-progress" data-url="{progress}"><progress max="100" value="0"' in page


def test_the_send_button_confirms_then_queues_every_developer_in_the_audience(
    admin_client, memo, django_capture_on_commit_callbacks, eager
):
    approve(memo)
    url = reverse("admin:memos_memo_send", args=[memo.pk])
    confirm = admin_client.get(url).content.decode()
    assert "2 developers" in confirm and "the audience is the one approved by approver" in confirm.lower()
    assert Delivery.objects.count() == 0
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, follow=True)
    assert "being queued" in response.content.decode()
    memo.refresh_from_db()
    assert memo.status == "sent" and len(memo.content_hash) == 64
    assert set(Delivery.objects.values_list("developer__external_id", "status")) == {("cn-1", "sent"), ("ru-1", "sent")}
    assert AuditEvent.objects.filter(action="memo.sent", object_id=str(memo.pk)).exists()


def test_the_send_page_shows_audience_changes_and_needs_them_confirmed(admin_client, memo):
    approve(memo)
    make_developer("cn-2", "CN")
    url = reverse("admin:memos_memo_send", args=[memo.pk])
    page = admin_client.get(url).content.decode()
    assert "The audience changed since" in page and "+1" in page
    response = admin_client.post(url, follow=True)
    assert "confirm to send" in response.content.decode()
    assert not Delivery.objects.exists()


def test_the_send_action_refuses_a_memo_already_sent(admin_client, memo):
    sent_memo(memo)
    deliveries = list(Delivery.objects.values_list("id", "status"))
    response = admin_client.post(
        reverse("admin:memos_memo_changelist"),
        {"action": "send_selected", "_selected_action": [memo.pk]},
        follow=True,
    )
    assert "only an approved memo can be sent" in response.content.decode()
    assert list(Delivery.objects.values_list("id", "status")) == deliveries  # nothing more, nothing sent again


def test_a_sent_memo_cannot_be_edited(admin_client, memo):
    sent_memo(memo)
    url = reverse("admin:memos_memo_change", args=[memo.pk])
    admin_client.post(url, memo_form(subject="changed"))
    memo.refresh_from_db()
    assert memo.subject != "changed"
    assert b"Send\xe2\x80\xa6" not in admin_client.get(url).content


def test_an_edit_saved_after_the_send_started_is_refused(admin_client, memo):
    url = reverse("admin:memos_memo_change", args=[memo.pk])
    admin_client.get(url)
    memo_in(memo, "sending")  # another admin had it approved and pressed Send
    response = admin_client.post(url, memo_form(title=memo.title, slug=memo.slug, subject="changed"))
    assert "it can no longer change" in response.content.decode()
    memo.refresh_from_db()
    assert memo.status == "sending" and memo.subject != "changed"


def test_the_audience_count_follows_rules_not_saved_yet(admin_client, memo, developers):
    url = reverse("admin:memos_memo_audience", args=[memo.pk])
    saved = admin_client.get(url).json()
    assert saved["total"] == 2
    live = admin_client.get(url, {"rules": "1", "include_countries": ["US", "CN"], "active_only": "on"}).json()
    assert live["total"] == 2 and {row[0] for row in live["by_country"]} == {"US", "CN"}
    bad = admin_client.get(url, {"rules": "1", "attribute_filters": '{"plan__contains": "x"}'})
    assert bad.status_code == 400


def test_a_new_memo_counts_its_audience_before_its_first_save(admin_client, memo, developers):
    region = memo.include_regions.get()
    url = reverse("admin:memos_memo_audience_rules")
    live = admin_client.get(url, {"rules": "1", "include_regions": [region.pk], "exclude_countries": ["RU"]}).json()
    assert live["total"] == 1 and [row[0] for row in live["by_country"]] == ["CN"]
    assert admin_client.get(url).json()["total"] == 0  # no rules, nobody
    page = admin_client.get(reverse("admin:memos_memo_add")).content.decode()
    assert f'data-url="{url}"' in page


def test_why_a_developer_is_or_is_not_included_in_one_line(admin_client, memo, developers):
    url = reverse("admin:memos_memo_explain", args=[memo.pk])
    assert admin_client.get(url, {"developer": "cn-1"}).json()["explanation"] == (
        "cn-1 is included: CN is in region Unsupported regions; active"
    )
    assert admin_client.get(url, {"developer": "us-1"}).json()["explanation"] == (
        "us-1 is not included: US is in no included country or region"
    )
    assert "No developer" in admin_client.get(url, {"developer": "ghost"}).json()["explanation"]


def test_attribute_filters_and_active_since_narrow_the_audience(admin_client, memo, developers):
    from memo_service.developers.models import Developer

    Developer.objects.filter(external_id="cn-1").update(attributes={"plan": "pro"})
    memo.attribute_filters = {"plan": "pro"}
    memo.save()
    url = reverse("admin:memos_memo_explain", args=[memo.pk])
    assert admin_client.get(url, {"developer": "ru-1"}).json()["explanation"] == (
        "ru-1 is not included: attribute plan is not 'pro'"
    )
    assert admin_client.get(reverse("admin:memos_memo_audience", args=[memo.pk])).json()["total"] == 1


def test_the_preview_shows_each_language_for_a_chosen_developer_and_sends_a_test(admin_client, memo, mailoutbox):
    url = reverse("admin:memos_memo_preview", args=[memo.pk])
    page = admin_client.get(url, {"developer": "cn-1"}).content.decode()
    assert "来自中国的访问将被阻止" in page and 'sandbox srcdoc="' in page
    english = admin_client.get(url, {"developer": "cn-1", "language": "en"}).content.decode()
    assert "Access from" in english
    admin_client.post(url, {"developer": "cn-1", "language": "en"})
    [test] = mailoutbox
    assert test.to == ["alice@example.com"] and test.subject.startswith("[TEST] Access from")
    # A dead link of the real one's shape: nobody can answer for the developer with it.
    link = found(r"http://testserver/ack/[^/\s]+/", test.body)
    assert admin_client.get(link).status_code == 400
    assert not Delivery.objects.exists()


def test_every_change_is_in_the_read_only_audit_log(admin_client, memo):
    admin_client.post(reverse("admin:memos_memo_add"), memo_form(slug="audited"))
    assert AuditEvent.objects.filter(action="memo.created").exists()
    page = admin_client.get(reverse("admin:memos_auditevent_changelist")).content.decode()
    assert "memo.created" in page
    event = AuditEvent.objects.first()
    assert event is not None
    admin_client.post(reverse("admin:memos_auditevent_change", args=[event.pk]), {"action": "forged"})
    event.refresh_from_db()
    assert event.action == "memo.created"


def test_an_attribute_named_like_a_lookup_is_still_an_attribute(admin_client, memo, developers):
    from memo_service.developers.models import Developer

    Developer.objects.filter(external_id="cn-1").update(attributes={"isnull": "yes"})
    memo.attribute_filters = {"isnull": "yes"}
    memo.save()
    assert admin_client.get(reverse("admin:memos_memo_audience", args=[memo.pk])).json()["total"] == 1
    live = admin_client.get(
        reverse("admin:memos_memo_audience", args=[memo.pk]),
        {"rules": "1", "include_countries": ["CN", "RU"], "attribute_filters": '{"contains": "x"}'},
    )
    assert live.status_code == 200 and live.json()["total"] == 0


def test_the_audit_log_names_and_links_its_objects_and_filters_by_memo(admin_client, memo, developers):
    from memo_service.memos.audit import audit_record

    other = make_memo(title="Another memo", slug="another")
    audit_record(actor=None, action="memo.approved", obj=memo)
    audit_record(actor=None, action="memo.approved", obj=other)
    audit_record(actor=None, action="developer.country_changed", obj=developers["ru"], memo=memo.slug)
    url = reverse("admin:memos_auditevent_changelist")
    page = admin_client.get(url).content.decode()
    assert f'<a href="/admin/memos/memo/{memo.pk}/change/">memo “Regions blocked”</a>' in page
    assert "memos.memo " not in page
    mine = admin_client.get(url, {"memo": memo.pk}).content.decode()
    rows = mine.split('id="result_list"')[1].split("</table>")[0]
    assert "Regions blocked" in rows and "Another memo" not in rows and "developer.country_changed" in rows
    found = (
        admin_client.get(url, {"q": "country_changed"})
        .content.decode()
        .split('id="result_list"')[1]
        .split("</table>")[0]
    )
    assert "developer.country_changed" in found and "memo.approved" not in found
