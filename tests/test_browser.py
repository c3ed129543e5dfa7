"""The whole flow in a real browser (Debian's chromium, driven by Playwright), with a real
Celery worker: a composer writes a memo, hits a template error and fixes it, previews it
for a developer in CN in Chinese and asks for approval; an approver approves; the
composer sends and watches the progress bar reach 100 %; the developer opens the link
from the outbox on a phone and acknowledges; the dashboard counts it. Along the way, what
admins see (issue 12): the live audience count, the error banner, the memo page's
buttons and read-only state, the outbox list, the dashboard, a viewer's page and a
refusal, the role hints, a Region made by a composer, the audit log.

Every page is saved as a screenshot under test-artifacts/browser/, and any browser
console error fails the test. Skipped when chromium or Playwright is missing (`.ci/run`
installs both).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.contrib.auth.models import Group
from django.core import mail
from django.utils import timezone

from memo_service.developers.models import Region, TrafficObservation
from memo_service.memos.models import Answer, Memo
from tests.browsing import BROWSER_MARKS, IPHONE, Person, browser, composer_and_approver, sent_emails, site  # noqa: F401  (fixtures)
from tests.conftest import found, make_developer

pytestmark = BROWSER_MARKS


def assert_buttons_clear_of_title(page: Any) -> None:
    """The memo page's buttons wrap below its title, never over it."""
    title = page.locator("#content h1").bounding_box()
    buttons = page.locator("#memo-actions").bounding_box()
    assert buttons["y"] >= title["y"] + title["height"], (title, buttons)


def test_a_memo_from_composer_to_approver_to_developer_in_a_browser(
    browser: Any, site: str, worker: Path, django_user_model: Any
) -> None:
    errors: list[str] = []
    composer_and_approver(django_user_model)
    make_developer("cn-1", "CN", "zh-hans", name="Wang Wei")
    make_developer("ru-1", "RU", name="Olga Petrova")
    make_developer("ru-fr", "RU", "fr", name="Amélie Durand")  # no French text: she reads the English one
    region = Region.objects.get(name="Unsupported regions")

    # The composer writes the memo, with a mistake in the HTML.
    carol = Person(browser, site, "composer", errors)
    carol.login("carol", "pw-carol-123")
    page = carol.page
    page.goto(f"{site}/admin/memos/memo/add/")
    page.fill("#id_title", "Access from unsupported regions ends")
    page.fill("#id_subject", "Access from {{ developer.country_name }} ends")
    page.fill("#id_html_body", "<p>Dear {{ developer.name }},</p>\n<p>{{ developer.nmae }}</p>")
    page.fill("#id_text_body", "Dear {{ developer.name }}, access from {{ developer.country_name }} ends.")
    page.fill("#id_effective_date", "2027-07-09")
    page.get_by_label("Acknowledgement deadline: date").fill("2027-06-30")
    page.get_by_label("Acknowledgement deadline: time (UTC)").fill("23:59:00")
    page.select_option("#id_include_regions_from", str(region.pk))
    page.click("#id_include_regions_add")
    # A new memo counts its audience before its first save, regions included.
    audience = page.locator("#audience-summary")
    audience.get_by_text("3 developers").wait_for()
    assert page.locator("#id_include_countries_from").count() == 1  # a two-list picker, not a Ctrl-click box
    carol.shot("new-memo-audience")
    page.click("text=Add another Memo translation")
    page.select_option("#id_translations-0-language", "zh-hans")
    page.fill("#id_translations-0-subject", "来自{{ developer.country_name }}的访问将终止")
    page.fill(
        "#id_translations-0-html_body",
        "<p>{{ developer.name }}，您好：</p><p>来自{{ developer.country_name }}的访问将终止。</p>",
    )
    page.fill(
        "#id_translations-0-text_body", "{{ developer.name }}，您好：来自{{ developer.country_name }}的访问将终止。"
    )
    page.click("input[name=_continue]")
    error = page.locator(".field-html_body .errorlist")
    assert "line 2: developer.nmae is not a variable: did you mean developer.name?" in error.inner_text()
    assert "html body: line 2" in page.inner_text("#error-places").lower()  # the banner at the top says where
    carol.shot("template-error")

    # ...fixes it and saves.
    page.fill(
        "#id_html_body", "<p>Dear {{ developer.name }},</p>\n<p>Access from {{ developer.country_name }} ends.</p>"
    )
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    carol.shot("saved")
    memo = Memo.objects.get(title="Access from unsupported regions ends")
    # Changing another audience field keeps the region in the live count.
    page.select_option("#id_exclude_countries_from", "RU")
    page.click("#id_exclude_countries_add")
    audience.get_by_text("1 developers").wait_for()
    assert "not saved yet" in audience.inner_text()
    carol.shot("audience-live")

    # Preview: found by name; in English the country is named in English.
    page.click("#memo-actions >> text=Preview")
    page.fill("#preview-find", "Wang")
    page.select_option("select[name=language]", "en")
    page.click("#preview-form input[type=submit]")
    assert page.inner_text("#preview-subject") == "Access from China ends"
    carol.shot("preview-en-found-by-name")
    # Below the fold: a click that has to scroll there first lands before the page stops moving.
    page.locator("#send-test").scroll_into_view_if_needed()
    page.click("#send-test")
    page.wait_for_selector(".messagelist .success")
    test_link = found(r"(http://\S+/ack/\S+/)", str(mail.outbox[-1].body), 1)
    before = len(errors)
    assert page.goto(test_link).status == 400  # refused (it belongs to nobody), saying what it is
    assert "The link of a test email" in page.inner_text("h1")
    page.wait_for_load_state("load")
    del errors[before:]  # that refusal's own 400, which the browser reports as an error
    carol.shot("test-email-link")
    # ...for the developer in CN, in Chinese.
    page.goto(f"{site}/admin/memos/memo/{memo.pk}/preview/")
    page.select_option("select[name=developer]", "cn-1")
    page.select_option("select[name=language]", "zh-hans")
    page.click("#preview-form input[type=submit]")
    assert page.inner_text("#preview-subject") == "来自中国的访问将终止"
    carol.shot("preview-zh")
    page.goto(f"{site}/admin/memos/memo/{memo.pk}/change/")
    page.click("#request-approval")
    page.wait_for_selector(".messagelist .success")
    carol.shot("approval-requested")

    # The approver approves.
    anna = Person(browser, site, "approver", errors)
    anna.login("anna", "pw-anna-123")
    anna.page.goto(f"{site}/admin/memos/memo/{memo.pk}/change/")
    anna.page.click("#approve")  # the review, then its confirmation (tests/test_browser_review.py)
    anna.page.click("#review-approve")
    anna.page.click("#confirm-approve")
    anna.page.wait_for_selector(".messagelist .success")
    anna.shot("approved")

    # The approved memo's buttons sit under its title, Cancel marked as destructive.
    page.goto(f"{site}/admin/memos/memo/{memo.pk}/change/")
    assert_buttons_clear_of_title(page)
    cancel = page.locator("#memo-actions li.danger button")
    assert cancel.inner_text().lower() == "cancel the memo"
    assert cancel.evaluate("b => getComputedStyle(b).backgroundColor") != page.locator(
        "#memo-actions a.sendlink"
    ).evaluate("a => getComputedStyle(a).backgroundColor")
    carol.shot("approved-buttons")

    # The composer sends and watches the progress bar.
    page.goto(f"{site}/admin/memos/memo/{memo.pk}/send/")
    carol.shot("send-confirm")
    page.click("#confirm-send")
    page.wait_for_selector('#send-progress[data-percent="100"]', timeout=90_000)
    assert page.inner_text("#send-progress .counts").startswith("100 %: sent 3")
    carol.shot("progress-100")
    # A sent memo is shown read-only: no Save that could only be refused.
    assert page.locator("input[name=_save], input[name=_continue]").count() == 0
    assert page.inner_text("#content h1") in ("View memo (sending)", "View memo (sent)")  # as the page was loaded
    assert "can no longer change" in page.inner_text("#memo-readonly")
    assert page.locator("#memo-actions li").count() >= 6
    assert_buttons_clear_of_title(page)

    # The developer opens the link from the outbox, on a phone, and acknowledges.
    link = next(
        found(r"(http://\S+/ack/\S+/)", m.get_body(preferencelist=("plain",)).get_content(), 1)
        for m in sent_emails(worker)
        if "cn-1@example.com" in str(m["To"])
    )
    wang = Person(
        browser,
        site,
        "developer",
        errors,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        user_agent=IPHONE,
    )
    wang.page.goto(link)
    assert "/ack/memo/" in wang.page.url  # the token left the address bar
    assert "来自中国的访问将终止" in wang.page.inner_text("h1")
    wang.shot("memo-page")
    assert not Answer.objects.exists()
    wang.page.tap("button[value=acknowledged]")
    wang.page.wait_for_selector(".done")
    wang.shot("acknowledged")
    ack = Answer.objects.get()
    assert ack.developer.external_id == "cn-1"
    # The tap counted as a person on the page; only the speed (seconds after the send) is flagged.
    assert [r.split(" s ")[1] for r in ack.automation_reasons] == ["after the email was sent"], ack.automation_reasons

    # The English text names the country in English to a French-speaking developer.
    amelie = next(m for m in sent_emails(worker) if "ru-fr@example.com" in str(m["To"]))
    assert "access from Russia ends" in amelie.get_body(preferencelist=("plain",)).get_content()

    # The outbox: an admin page, no banner per email, searchable.
    page.goto(f"{site}/outbox/")
    assert page.title() == "Outbox | memo-service" and page.locator(".messagelist").count() == 0
    page.fill("#searchbar", "ru-fr@")
    page.press("#searchbar", "Enter")
    assert page.locator("#result_list tbody tr").count() == 1
    carol.shot("outbox-search")

    # The dashboard counts it, in words, with who has not answered.
    page.goto(f"{site}/admin/memos/memo/{memo.pk}/dashboard/")
    assert "1 acknowledged of 3" in page.inner_text("#ack-chart")
    assert "deadline 2027-06-30 (in" in page.text_content("#chart-deadline")  # marked at the edge
    headings = page.locator("#funnel th").all_text_contents()
    assert "asked for help" in headings and "answered (response rate of those sent)" in headings
    assert page.locator("#funnel tbody tr").first.locator("td").last.inner_text() == "1 (33 %)"
    assert page.locator("#unanswered-list tbody tr").count() == 2 and page.locator("#unanswered-csv").count() == 1
    carol.shot("dashboard")

    # The audit log names the memo and links to it, filtered by memo.
    page.goto(f"{site}/admin/memos/auditevent/?memo={memo.pk}")
    page.locator(f'#result_list a[href="/admin/memos/memo/{memo.pk}/change/"]').first.wait_for()
    carol.shot("audit-log")

    # A composer makes a Region, countries picked from a list with a filter box.
    page.goto(f"{site}/admin/developers/region/add/")
    page.fill("#id_name", "Sanctioned")
    page.fill("#id_countries_input", "Iran")
    page.select_option("#id_countries_from", "IR")
    page.click("#id_countries_add")
    page.fill("#id_source", "policy v2")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    assert list(Region.objects.get(name="Sanctioned").countries) == ["IR"]
    carol.shot("region-made")

    # A viewer is offered only what they may do; a refusal explains itself in the admin.
    viewer = django_user_model.objects.create_user("victor", "victor@example.com", "pw-victor-123", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Viewer"))
    victor = Person(browser, site, "viewer", errors)
    victor.login("victor", "pw-victor-123")
    victor.page.goto(f"{site}/admin/memos/memo/{memo.pk}/change/")
    actions = victor.page.inner_text("#memo-actions")
    assert (
        "DASHBOARD" in actions.upper()
        and "EVIDENCE CSV" not in actions.upper()
        and "EVIDENCE JSON" not in actions.upper()
    )
    victor.shot("memo-page")
    victor.page.goto(f"{site}/admin/memos/memo/{memo.pk}/preview/")
    assert victor.page.locator("#send-test").count() == 0
    victor.page.goto(f"{site}/admin/memos/memo/{memo.pk}/evidence.csv")
    assert "Composer or Approver role" in victor.page.inner_text("#refusal")
    assert victor.page.locator("#user-tools").count() == 1  # inside the admin
    victor.shot("refusal")
    errors[:] = [e for e in errors if not (e.startswith("viewer:") and "403" in e)]  # that refusal was the point
    victor.page.goto(f"{site}/admin/memos/case/")
    assert "takes the Composer role" in victor.page.inner_text("#role-hint")
    victor.shot("case-role-hint")
    assert errors == []


def test_a_memo_by_traffic_tells_each_developer_why_and_hears_a_dispute_in_a_browser(
    browser: Any, site: str, worker: Path, django_user_model: Any
) -> None:
    """Traffic from CN or HK in the last 30 days, not the account's country: a US account
    that called from CN is told, says why on its page (phone), disputes it, and the
    composer exempts it; a Chinese-speaking DE account reads why in Chinese."""
    errors: list[str] = []
    composer_and_approver(django_user_model)
    us = make_developer("us-1", "US", name="John Smith")
    de = make_developer("de-zh", "DE", "zh-hans", name="Li Na")
    make_developer("cn-quiet", "CN", name="No Traffic")  # an account in CN with no traffic: not in
    today = timezone.now().date()
    for developer, country, days_ago, requests in [(us, "CN", 3, 800), (us, "CN", 1, 440), (de, "HK", 2, 12)]:
        TrafficObservation.objects.create(
            developer=developer,
            country=country,
            day=today - dt.timedelta(days=days_ago),
            requests=requests,
            source="gateway",
            geo_database="iptocc 3.3.170",
        )

    carol = Person(browser, site, "composer", errors)
    carol.login("carol", "pw-carol-123")
    page = carol.page
    page.goto(f"{site}/admin/memos/memo/add/")
    page.fill("#id_title", "API traffic from CN and HK will be blocked")
    page.fill("#id_subject", "API traffic from {{ developer.traffic_countries }} will be blocked")
    page.fill("#id_html_body", "<p>Dear {{ developer.name }},</p><p>{{ developer.traffic_summary }}</p>")
    page.fill("#id_text_body", "Dear {{ developer.name }}, {{ developer.traffic_summary }}")
    page.fill("#id_effective_date", "2027-07-09")
    page.select_option("#id_audience_basis", "traffic")
    for code in ("CN", "HK"):
        page.select_option("#id_traffic_countries_from", code)
        page.click("#id_traffic_countries_add")
    audience = page.locator("#audience-summary")
    audience.get_by_text("2 developers").wait_for()  # us-1 and de-zh, by traffic; not cn-quiet
    carol.shot("traffic-audience-live")
    page.click("text=Add another Memo translation")
    page.select_option("#id_translations-0-language", "zh-hans")
    page.fill("#id_translations-0-subject", "来自{{ developer.traffic_countries }}的 API 流量将被阻止")
    page.fill(
        "#id_translations-0-html_body", "<p>{{ developer.name }}，您好：</p><p>{{ developer.traffic_summary }}</p>"
    )
    page.fill("#id_translations-0-text_body", "{{ developer.name }}，您好：{{ developer.traffic_summary }}")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    memo = Memo.objects.get(slug="api-traffic-from-cn-and-hk-will-be-blocked")
    page.goto(f"{site}/admin/memos/memo/{memo.pk}/preview/?in_by=traffic_only")
    assert "us-1 is included: traffic from CN on 2 days" in page.inner_text("#preview-why")
    carol.shot("traffic-preview-why")
    page.goto(f"{site}/admin/memos/memo/{memo.pk}/change/")
    page.click("#request-approval")
    page.wait_for_selector(".messagelist .success")
    anna = Person(browser, site, "approver", errors)
    anna.login("anna", "pw-anna-123")
    anna.page.goto(f"{site}/admin/memos/memo/{memo.pk}/change/")
    anna.page.click("#approve")  # the review, then its confirmation (tests/test_browser_review.py)
    anna.page.click("#review-approve")
    anna.page.click("#confirm-approve")
    anna.page.wait_for_selector(".messagelist .success")
    page.goto(f"{site}/admin/memos/memo/{memo.pk}/send/")
    assert "in by traffic" in page.inner_text("#content")
    page.click("#confirm-send")
    page.wait_for_selector('#send-progress[data-percent="100"]', timeout=90_000)
    carol.shot("traffic-sent")

    def link_of(external_id: str) -> str:
        return next(
            found(r"(http://\S+/ack/\S+/)", m.get_body(preferencelist=("plain",)).get_content(), 1)
            for m in sent_emails(worker)
            if f"{external_id}@example.com" in str(m["To"])
        )

    memo_emails = [m for m in sent_emails(worker) if not m["X-Memo-Notification"]]  # not the approval's
    assert {str(m["To"]).split("<")[-1].rstrip(">") for m in memo_emails} == {
        "us-1@example.com",
        "de-zh@example.com",
    }
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "user_agent": IPHONE}
    john = Person(browser, site, "developer-us", errors, **phone)
    john.page.goto(link_of("us-1"))
    why = john.page.inner_text("#why")
    assert "You are receiving this because API traffic from your account came from China (CN) on 2 days" in why
    john.shot("why-traffic")
    john.page.click("#traffic summary")
    john.page.fill("#traffic-comment", "That is our CDN's egress, not our servers")
    john.page.tap("button[value=disputes_traffic]")
    john.page.wait_for_selector("#traffic .note")
    john.shot("traffic-disputed")

    li = Person(browser, site, "developer-zh", errors, **phone)
    li.page.goto(link_of("de-zh"))
    assert "您收到此通知，是因为您账户的 API 流量于" in li.page.inner_text("#why")
    assert "香港（HK）：" in li.page.inner_text(".memo")  # the summary a template printed, in Chinese
    li.shot("why-traffic-zh")

    page.goto(f"{site}/admin/memos/dispute/?state=open")
    assert "traffic from CN on 2 days" in page.inner_text("#result_list")
    page.click("#result_list a[href*='/case/']")  # each dispute is decided on its case
    page.check("input[name=outcome][value=exempted]")
    page.fill("#rationale", "The traffic is a CDN's egress, not the developer's servers.")
    page.click("#decide")
    page.click("#confirm-decide")
    page.wait_for_selector(".messagelist .success")
    carol.shot("traffic-dispute-exempted")
    john.page.reload()
    assert "this memo no longer applies to you" in john.page.inner_text("#traffic")
    assert john.page.locator("button[value=acknowledged]").count() == 0
    john.shot("traffic-exempted")
    assert Answer.objects.get().response == "disputes_traffic"
    assert errors == []
