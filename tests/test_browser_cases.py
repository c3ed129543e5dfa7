"""Cases in a real browser (Debian's chromium through Playwright): after a memo's send, a
developer in CN asks for help and one in RU says their region is wrong. A composer opens
Memos → Cases, assigns the help request to herself, replies, finds it under "assigned
to me", decides the region dispute with a rationale through the confirmation page, and
sees the open cases on the memo's dashboard. The developers' emails are in the outbox:
the reply in Chinese, the outcome in English. Screenshots under
test-artifacts/browser_cases/; any browser console error fails the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from memo_service.celery import app
from memo_service.developers.models import Developer
from memo_service.memos.models import Case, DisputeResolution, Notification
from tests.browsing import BROWSER_MARKS, IPHONE, Person, browser, composer_and_approver, sent_emails, site  # noqa: F401  (fixtures)
from tests.conftest import answered, make_developer, make_memo, sent_memo

pytestmark = BROWSER_MARKS


@pytest.fixture
def outbox(settings: Any) -> Iterator[Path]:
    """Emails written to the outbox (the service's default backend), tasks run in the
    process that enqueues them: the live server's request sends the reply."""
    settings.EMAIL_BACKEND = "memo_service.outbox.OutboxEmailBackend"
    app.conf.task_always_eager = True
    try:
        yield Path(django_settings.OUTBOX_DIR)
    finally:
        app.conf.task_always_eager = False


def notifications(outbox: Path) -> dict[str, Any]:
    """The cases' emails (replies and outcomes), by recipient."""
    kinds = [Notification.Kind.CASE_REPLY, Notification.Kind.DISPUTE_OUTCOME]
    ids = {str(pk) for pk in Notification.objects.filter(kind__in=kinds).values_list("pk", flat=True)}
    return {str(m["To"]): m for m in sent_emails(outbox) if m["X-Memo-Notification"] in ids}


def text_of(message: Any) -> str:
    return str(message.get_body(preferencelist=("plain",)).get_content())


def test_a_composer_handles_a_help_request_and_decides_a_dispute_in_a_browser(
    browser: Any, site: str, outbox: Path, django_user_model: Any
) -> None:
    errors: list[str] = []
    composer_and_approver(django_user_model)
    cn = make_developer("cn-1", "CN", "zh-hans", name="Wang Wei")
    ru = make_developer("ru-1", "RU", name="Olga Petrova")
    memo = sent_memo(make_memo())
    answered(memo, cn, "needs_help", comment="我们的服务器在香港，怎么办？")
    answered(memo, ru, "disputes_region", country="KZ", comment="We moved to Almaty last year")
    help_case, dispute_case = (Case.objects.get(developer=d) for d in (cn, ru))

    carol = Person(browser, site, "composer", errors)
    carol.login("carol", "pw-carol-123")
    page = carol.page

    # Memos → Cases: both open, with their age.
    page.goto(f"{site}/admin/memos/case/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    assert "open" in rows.first.inner_text() and "RU, claims KZ" in page.inner_text("#result_list")
    carol.shot("cases")

    # The help request: assigned to herself, replied to.
    page.click(f"#result_list a[href$='/case/{help_case.pk}/change/']")
    assert "我们的服务器在香港" in page.inner_text("#answer-comment")
    carol.shot("help-request")
    page.click("#assign-me")
    page.wait_for_selector(".messagelist .success")
    assert page.inner_text("#case-assignee") == "carol"
    page.fill("#reply-text", "请通过新加坡区域访问 API。")
    page.click("#send-reply")
    page.wait_for_selector(".messagelist .success")
    assert "waiting for the developer" in page.inner_text("#case-status")
    assert "请通过新加坡区域访问 API。" in page.inner_text("#case-history")
    carol.shot("replied")

    # "Assigned to me" finds it, and only it.
    page.goto(f"{site}/admin/memos/case/?assigned=me")
    assert page.locator("#result_list tbody tr").count() == 1
    carol.shot("assigned-to-me")

    # The dispute: a decision needs its rationale and a confirmation.
    page.goto(f"{site}/admin/memos/case/{dispute_case.pk}/change/")
    assert "Russia" in page.inner_text("#country-now") and "Kazakhstan" in page.inner_text("#country-claimed")
    page.check("input[name=outcome][value=corrected]")
    page.fill("#rationale", "Your company's invoices are addressed in Almaty.")
    carol.shot("dispute-decision")
    page.click("#decide")
    consequence = page.inner_text("#confirm-consequence")
    assert "from Russia (RU) to Kazakhstan (KZ)" in consequence and "no longer applies" in consequence
    assert not DisputeResolution.objects.exists()  # nothing is decided before the confirmation
    carol.shot("dispute-confirm")
    page.click("#confirm-decide")
    page.wait_for_selector(".messagelist .success")
    decision = page.inner_text("#dispute-decision")
    assert "Russia (RU)" in decision and "Kazakhstan (KZ)" in decision  # both countries stay visible
    assert "resolved" in page.inner_text("#case-status").lower() and page.locator("#decide-form").count() == 0
    carol.shot("dispute-decided")
    assert Developer.objects.get(pk=ru.pk).country.code == "KZ"

    # The memo's dashboard lists the case still open (waiting), with its age.
    page.goto(f"{site}/admin/memos/memo/{memo.pk}/dashboard/")
    open_cases = page.locator("#open-cases tbody tr")
    assert open_cases.count() == 1 and "cn-1" in open_cases.inner_text()
    carol.shot("dashboard-open-cases")

    # On a phone, the case page still reads.
    phone = Person(browser, site, "composer-phone", errors, viewport={"width": 390, "height": 844}, user_agent=IPHONE)
    phone.login("carol", "pw-carol-123")
    phone.page.goto(f"{site}/admin/memos/case/{help_case.pk}/change/")
    phone.shot("case-on-a-phone")

    # The developers' emails: the reply in Chinese, the outcome in English.
    sent = notifications(outbox)
    assert set(sent) == {"cn-1@example.com", "ru-1@example.com"}
    reply, outcome = sent["cn-1@example.com"], sent["ru-1@example.com"]
    # Each names the memo by the subject the developer was sent, never by its internal title.
    assert reply["Subject"].strip() == "回复：您对“来自中国的访问将被阻止”的答复"
    assert "请通过新加坡区域访问 API。" in text_of(reply) and "这是我们对您就通知" in text_of(reply)
    assert outcome["Subject"].strip().startswith("Your dispute about “Access from Russia ends ")
    assert "We corrected your region from Russia to Kazakhstan." in text_of(outcome)
    assert "Why: Your company's invoices are addressed in Almaty." in text_of(outcome)
    page.goto(f"{site}/outbox/")
    carol.shot("outbox")
    assert errors == []
