"""Withdraw and correct in a real browser (Debian's chromium through Playwright): a
composer withdraws one sent memo (refused without a reason first) and sends a correction
of another, which is approved and sent; each dashboard says what happened and links to
the other memo. Screenshots under test-artifacts/browser_withdrawal/; any console error
fails the test."""

from __future__ import annotations

from typing import Any

from django.core import mail

from memo_service.memos.models import Delivery, Memo
from tests.browsing import BROWSER_MARKS, Person, browser, composer_and_approver, site  # noqa: F401  (fixtures)
from tests.conftest import answered, approve, make_developer, make_memo, sent_memo

pytestmark = BROWSER_MARKS


def test_a_composer_withdraws_one_memo_and_corrects_another(
    browser: Any, site: str, django_user_model: Any, later: list[Any], eager: None
) -> None:
    errors: list[str] = []
    composer_and_approver(django_user_model)
    cn = make_developer("cn-1", "CN", "zh-hans", name="Wang Wei")
    ru = make_developer("ru-1", "RU", name="Olga Petrova")
    withdrawn = sent_memo(make_memo())
    wrong = sent_memo(make_memo(title="Traffic limits", slug="traffic-limits"))
    answered(wrong, ru)
    mail.outbox.clear()

    carol = Person(browser, site, "composer", errors)
    carol.login("carol", "pw-carol-123")
    page = carol.page

    # Withdraw…: a page that says what it does and asks why; no reason, no withdrawal.
    page.goto(f"{site}/admin/memos/memo/{withdrawn.pk}/change/")
    page.click("#withdraw")
    page.wait_for_selector("#withdraw-form")
    assert "the 2 developers who received it are emailed" in page.inner_text("#withdraw-effects")
    carol.shot("withdraw-confirmation")
    page.evaluate("document.querySelector('#id_reason').removeAttribute('required')")  # past the browser's own check
    page.click("#withdraw-confirm")
    assert "A withdrawal needs a reason" in page.inner_text("#reason-error")
    assert Memo.objects.get(pk=withdrawn.pk).status == Memo.Status.SENT
    carol.shot("withdraw-refused-without-reason")
    page.fill("#id_reason", "The blocking date was wrong; a corrected notice follows.")
    page.click("#withdraw-confirm")
    page.wait_for_selector(".messagelist .success")
    assert "Withdrawn on" in page.inner_text("#memo-withdrawn")
    assert page.locator("#withdraw").count() == 0
    carol.shot("withdrawn-memo-page")
    assert Memo.objects.get(pk=withdrawn.pk).status == Memo.Status.WITHDRAWN
    subjects = sorted(str(m.subject) for m in mail.outbox)
    # Each in their language; the subject has each developer's values, so the notice names
    # the memo by the day it was sent, never by its internal title.
    assert subjects[0].startswith("Withdrawn: our notice of ") and subjects[1].startswith("已撤回：我们于 ")
    assert not any("Regions blocked" in s for s in subjects)
    page.click("#memo-actions >> text=Dashboard")
    assert "2 of 2 were sent before the withdrawal" in page.inner_text("#dashboard-progress")
    carol.shot("withdrawn-dashboard")

    # Send a correction of the other memo: a draft prefilled from it, opened at once.
    page.goto(f"{site}/admin/memos/memo/{wrong.pk}/change/")
    page.click("#send-correction")
    page.wait_for_selector(".messagelist .success")
    correction = Memo.objects.get(supersedes=wrong)
    assert page.url.endswith(f"/admin/memos/memo/{correction.pk}/change/")
    assert page.input_value("#id_title") == "Traffic limits (correction)"
    assert page.input_value("#id_text_body") == wrong.text_body
    assert "This memo corrects" in page.inner_text("#memo-supersedes")
    carol.shot("correction-draft")
    page.fill("#id_text_body", wrong.text_body + "\nCorrected: the limits apply from 1 August.")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    carol.shot("correction-edited")

    # Approved by a second person and sent, as any memo; Olga acknowledged the earlier one and is asked again.
    sent_memo(approve(Memo.objects.get(pk=correction.pk)))
    assert Delivery.objects.filter(memo=correction, developer=ru).exists()
    assert Delivery.objects.filter(memo=correction, developer=cn).exists()
    page.goto(f"{site}/admin/memos/memo/{correction.pk}/dashboard/")
    assert "This memo corrects" in page.inner_text("#memo-supersedes")
    carol.shot("correction-dashboard")
    page.click("#memo-supersedes >> text=Traffic limits")
    assert "Corrected by" in page.inner_text(".memo-corrected-by")
    carol.shot("earlier-memo-links-its-correction")
    assert not errors, errors
