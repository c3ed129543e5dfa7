"""Approval that can say no, in a real browser (chromium through Playwright) with a real
Celery worker sending the notifications to the outbox: the composer asks for approval;
the approver is emailed, sees the count on the admin index, reviews the memo rendered in
English and in Chinese, and approves through the confirmation; the composer edits the
approved memo past the warning that voids the approval and asks again; the approver sees
the diff and requests changes with a comment; the composer is emailed it, sees it on the
memo page, edits and asks again; the approver sees the changed sentence and approves.

Screenshots land in test-artifacts/browser_review/; any console error fails the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model

from memo_service.memos.models import Memo
from tests.browsing import BROWSER_MARKS, Person, browser, composer_and_approver, sent_emails, site  # noqa: F401  (fixtures)
from tests.conftest import found, make_developer, make_memo, wait_for

pytestmark = BROWSER_MARKS


def mail_to(outbox: Path, address: str, subject: str) -> str:
    """The plain text of the email to `address` whose subject starts with `subject`,
    once the worker has written it."""

    def body() -> str:
        for message in sent_emails(outbox):
            if address in str(message["To"]) and str(message["Subject"]).startswith(subject):
                return str(message.get_body(preferencelist=("plain",)).get_content())
        return ""

    return wait_for(body, what=f"“{subject}…” to {address}")


def approve(person: Person) -> None:
    """Approve… on the review page, once the page has stopped scrolling to it (a click
    while it scrolls lands where the button was)."""
    button = person.page.locator("#review-approve")
    button.scroll_into_view_if_needed()
    person.page.wait_for_function("() => document.getElementById('review-approve').getBoundingClientRect().top >= 0")
    button.click()


def test_an_approver_reviews_asks_for_changes_and_approves_what_changed_in_a_browser(
    browser: Any, site: str, worker: Path, django_user_model: Any
) -> None:
    errors: list[str] = []
    composer_and_approver(django_user_model)
    make_developer("cn-1", "CN", "zh-hans", name="Wang Wei")
    make_developer("ru-1", "RU", name="Olga Petrova")
    memo = make_memo(title="Regions blocked")
    Memo.objects.filter(pk=memo.pk).update(author=get_user_model().objects.get(username="carol"))
    memo_page = f"{site}/admin/memos/memo/{memo.pk}/change/"

    # The composer asks for approval; the approver is emailed the review's link.
    carol = Person(browser, site, "composer", errors)
    carol.login("carol", "pw-carol-123")
    carol.page.goto(memo_page)
    carol.page.click("#request-approval")
    carol.page.wait_for_selector(".messagelist .success")
    carol.shot("approval-requested")
    asked = mail_to(worker, "anna@example.com", "Awaiting your approval")
    review_link = found(r"(http://\S+/review/)", asked, 1)

    # The approver: the count on the admin index, then the review, rendered in every language.
    anna = Person(browser, site, "approver", errors)
    anna.login("anna", "pw-anna-123")
    assert "1 memo awaits your approval" in anna.page.inner_text("#awaiting-approval")
    anna.shot("index-awaiting")
    anna.page.goto(review_link)
    english = anna.page.locator('.review-version[data-language="en"]').first
    assert "Dear Wang Wei," in english.locator(".review-text").inner_text()
    assert "{{" not in anna.page.inner_text("#content")
    anna.shot("review-en")
    chinese = anna.page.locator('.review-version[data-language="zh-hans"]').first
    chinese.scroll_into_view_if_needed()
    assert chinese.locator(".review-subject").inner_text() == "来自中国的访问将被阻止"
    chinese.screenshot(path=str(Person.artifacts / "zh-hans-version-in-review.png"))
    approve(anna)
    anna.page.wait_for_selector("#confirm-approve")
    anna.shot("approve-confirm")
    anna.page.click("#confirm-approve")
    anna.page.wait_for_selector(".messagelist .success")
    assert Memo.objects.get(pk=memo.pk).status == "approved"
    assert "anna approved the memo" in mail_to(worker, "carol@example.com", "Approved:")

    # The composer edits the approved memo: warned, asked, and told after.
    carol.page.goto(memo_page)
    assert "voids the approval by anna" in carol.page.inner_text("#void-warning")
    carol.shot("void-warning")
    carol.page.locator("#void-warning").screenshot(path=str(Person.artifacts / "void-warning-close-up.png"))
    carol.page.fill("#id_text_body", "Dear {{ developer.name }},\nTraffic from {{ developer.country_name }} ends soon.")
    carol.page.click("input[name=_continue]")
    carol.page.wait_for_selector(".errornote")
    assert "tick the box in the warning above" in carol.page.inner_text("#content")
    assert Memo.objects.get(pk=memo.pk).status == "approved"  # nothing saved
    carol.shot("void-unconfirmed")
    carol.page.check("#id_void_approval")
    carol.page.click("input[name=_continue]")
    carol.page.wait_for_selector(".messagelist .warning")
    assert "The approval of “Regions blocked” by anna is void" in carol.page.inner_text(".messagelist")
    carol.shot("approval-voided")
    carol.page.click("#request-approval")
    carol.page.wait_for_selector(".messagelist .success")

    # The approver sees what changed and asks for changes.
    anna.page.goto(review_link)
    assert "+ Traffic from China ends soon." in anna.page.inner_text("#review-diff")
    anna.page.fill("#request-changes-comment", "Say the date: “ends soon” is not a date & it must be.")
    anna.shot("request-changes")
    anna.page.click("#request-changes")
    anna.page.wait_for_selector(".messagelist .success")
    assert Memo.objects.get(pk=memo.pk).status == "draft"

    # The composer is emailed the comment, sees it on the memo page, edits and asks again.
    told = mail_to(worker, "carol@example.com", "Changes requested:")
    assert "Say the date: “ends soon” is not a date & it must be." in told
    carol.page.goto(memo_page)
    assert "is not a date & it must be" in carol.page.inner_text("#changes-requested")
    carol.shot("changes-requested-comment")
    carol.page.locator("#changes-requested").screenshot(path=str(Person.artifacts / "comment-close-up.png"))
    carol.page.fill(
        "#id_text_body", "Dear {{ developer.name }},\nTraffic from {{ developer.country_name }} ends on 9 July 2027."
    )
    carol.page.click("input[name=_continue]")
    carol.page.wait_for_selector(".messagelist .success")
    carol.page.click("#request-approval")
    carol.page.wait_for_selector(".messagelist .success")

    # The approver sees the changed sentence against the approval, and approves.
    anna.page.goto(review_link)
    diff = anna.page.inner_text("#review-diff")
    assert "− Traffic from China will be blocked." in diff and "+ Traffic from China ends on 9 July 2027." in diff
    assert "is not a date & it must be" in anna.page.inner_text("#review-earlier-request")
    anna.shot("review-diff")
    approve(anna)
    anna.page.click("#confirm-approve")
    anna.page.wait_for_selector(".messagelist .success")
    anna.shot("approved")
    memo.refresh_from_db()
    assert (memo.status, memo.approver.username if memo.approver else "") == ("approved", "anna")
    assert not errors, errors
