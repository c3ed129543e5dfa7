"""The smaller points of issue 29 in a real browser (Debian's chromium through Playwright),
on a desktop and on a 390×844 phone: the audience box asked with Enter (which no longer
saves the memo) under rules not saved yet, the warning about developers with no activity
date, the include and exclude pickers headed apart with their labels above, a send's
progress at the top of the memo's page, the schedule's date and time picker, the
dashboard that does not scroll sideways on the phone, and the error pages in Chinese for
a Chinese browser. Screenshots under test-artifacts/browser_small/."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos.models import Memo
from tests.browsing import BROWSER_MARKS, IPHONE, Person, browser, composer_and_approver, site  # noqa: F401  (fixtures)
from tests.conftest import approve, make_developer, make_memo, memo_in, sent_memo

pytestmark = BROWSER_MARKS


def close_up(person: Person, locator: Any, step: str) -> None:
    """A screenshot of one part of the page (beside the whole page's): what a step is about."""
    Person.shots += 1
    locator.screenshot(path=str(Person.artifacts / f"{Person.shots:02d}-{person.name}-{step}.png"))


PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "user_agent": IPHONE}


def test_the_smaller_points_on_a_desktop_and_a_phone(browser: Any, site: str, django_user_model: Any) -> None:
    errors: list[str] = []
    composer_and_approver(django_user_model)
    make_developer("cn-1", "CN", "zh-hans", name="Wang Wei", last_active_at=timezone.now())
    make_developer("ru-1", "RU", name="Olga Petrova")  # no activity date
    make_developer("us-1", "US", name="John Smith")
    draft = make_memo(title="Regions blocked", slug="regions-blocked")
    sending = memo_in(make_memo(title="Being sent", slug="being-sent"), Memo.Status.SENDING)
    approved = approve(make_memo(title="To schedule", slug="to-schedule"))
    sent = make_memo(("KZ",), title="Already sent", slug="already-sent")
    Developer.objects.bulk_create(
        [
            Developer(external_id=f"kz-{n}", email=f"kz-{n}@example.com", name="", country="KZ", language="ru")
            for n in range(1202)
        ]
    )
    sent_memo(sent)

    carol = Person(browser, site, "desktop", errors, viewport={"width": 1280, "height": 900})
    carol.login("carol", "pw-carol-123")
    page = carol.page
    change = f"{site}/admin/memos/memo/{draft.pk}/change/"
    page.goto(change)

    # The pickers: headed by what they do, labels above, told apart by colour.
    for field, heading in [
        ("include_countries", "Send to these countries"),
        ("exclude_countries", "Leave out these countries"),
    ]:
        row = page.locator(f".form-row.field-{field}")
        label = row.locator(f".flex-container > label[for=id_{field}]")
        assert label.inner_text().startswith(heading)
        selector = row.locator(".selector")
        assert label.bounding_box()["y"] + label.bounding_box()["height"] <= selector.bounding_box()["y"] + 1
    colours = [
        page.locator(f".form-row.field-{f}").evaluate("e => getComputedStyle(e).borderLeftColor")
        for f in ("include_countries", "exclude_countries")
    ]
    assert colours[0] != colours[1], colours
    carol.shot("pickers")
    close_up(carol, page.locator("fieldset:has(.field-include_countries)"), "audience-fieldset")

    # Why is a developer included: asked with Enter, under the rules as the form has them.
    page.select_option("#id_include_countries_from", "US")
    page.click("#id_include_countries_add")
    page.locator("#audience-summary").get_by_text("(not saved yet)").wait_for()
    page.fill("#explain-id", "us-1")
    page.press("#explain-id", "Enter")
    page.locator("#explain-result").get_by_text("us-1 is included: US is an included country").wait_for()
    assert page.url == change  # Enter asked; it did not save the memo
    assert page.locator(".messagelist").count() == 0
    draft.refresh_from_db()
    assert list(draft.include_countries) == []
    # Left out for having no activity date: said in the audience box as the rule is typed.
    page.fill("#id_active_since", (timezone.now() - dt.timedelta(days=30)).strftime("%Y-%m-%d"))
    page.locator("#no-activity-date").get_by_text("2 developers left out for having no activity date").wait_for()
    # And the question follows that rule too.
    page.press("#explain-id", "Enter")
    page.locator("#explain-result").get_by_text("us-1 is not included: not active since").wait_for()
    carol.shot("audience-box-unsaved-rules")
    close_up(carol, page.locator(".form-row.field-audience_summary"), "audience-box")

    # The send's progress, at the top of a memo being sent.
    page.goto(f"{site}/admin/memos/memo/{sending.pk}/change/")
    progress = page.locator("#send-progress")
    progress.locator(".counts").get_by_text("waiting").wait_for()
    assert progress.bounding_box()["y"] < 400
    assert progress.bounding_box()["y"] < page.locator("#memo_form").bounding_box()["y"]
    carol.shot("progress-at-the-top")
    close_up(carol, page.locator("#content"), "progress-under-the-buttons")

    # The schedule: the browser's date and time picker, the time zone named.
    page.goto(f"{site}/admin/memos/memo/{approved.pk}/schedule/")
    when = page.locator("#id_send_at")
    assert when.get_attribute("type") == "datetime-local"
    assert page.locator("label[for=id_send_at]").inner_text() == "Send at (UTC)"
    assert when.evaluate("e => { e.value = '2020-01-01T10:00'; return e.checkValidity(); }") is False  # before min
    at = timezone.now() + dt.timedelta(days=3)
    when.fill(at.strftime("%Y-%m-%dT%H:%M"))
    carol.shot("schedule-picker")
    page.click("input[type=submit][value=Schedule]")
    page.locator(".messagelist").get_by_text(f"will be sent at {at:%Y-%m-%d %H:%M} UTC").wait_for()
    approved.refresh_from_db()
    assert approved.status == Memo.Status.SCHEDULED

    # On a phone: the dashboard of a send to 1,202 fits the screen; its tables scroll inside.
    phone = Person(browser, site, "phone", errors, **PHONE)
    phone.login("carol", "pw-carol-123")
    phone.page.goto(f"{site}/admin/memos/memo/{sent.pk}/dashboard/")
    phone.page.locator("#funnel").get_by_text("1,202").first.wait_for()
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390
    phone.shot("dashboard")
    phone.page.goto(f"{site}/admin/memos/memo/{sent.pk}/change/")
    phone.page.locator('#send-progress[data-percent="100"]').wait_for()
    assert phone.page.locator("#send-progress .counts").inner_text().endswith("of 1,202.")
    assert phone.page.locator("#send-progress").bounding_box()["y"] < 844  # on the first screen
    phone.shot("progress-at-the-top")

    # A Chinese phone's browser gets the error pages in Chinese (their 4xx is expected).
    expected: list[str] = []
    reader = Person(browser, site, "chinese-phone", expected, locale="zh-CN", **PHONE)
    reader.page.goto(f"{site}/ack/not-a-real-token/")
    assert reader.page.locator("h1").inner_text() == "此链接无效"
    assert reader.page.locator("html").get_attribute("lang") == "zh-hans"
    reader.shot("invalid-link")
    reader.page.goto(f"{site}/no-such-page/")
    assert reader.page.locator("h1").inner_text() == "页面不存在"
    assert reader.page.evaluate("document.documentElement.scrollWidth") <= 390
    reader.shot("not-found")
    assert all(" 400 " in e or " 404 " in e for e in expected), expected

    assert errors == [], errors
