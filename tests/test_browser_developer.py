"""The developer's page in chromium on a phone (390×844), in English and in Simplified
Chinese: one developer reads the memo and the statement beside the button, acknowledges
and downloads the receipt; another objects, with a reason. Screenshots land in
test-artifacts/browser_developer/."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from django.utils import timezone

from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.models import Answer
from memo_service.memos.withdrawal import memo_withdraw
from tests.browsing import BROWSER_MARKS, IPHONE, Person, browser, site  # noqa: F401  (fixtures)
from tests.conftest import make_developer, make_memo, sent_memo

pytestmark = BROWSER_MARKS
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "user_agent": IPHONE}

WORDS = {
    "en": {
        "statement": "I have read this notice and understand that API traffic from China, Cuba, Hong Kong, Iran, "
        "Macao, North Korea, Russia, Syria will be blocked from July 9, 2027.",
        "memo": "Traffic from Russia will be blocked.",
        "done": "Already acknowledged on",
        "receipt": "Receipt of your answer",
        "object": "I object",
        "objected": "you objected to this memo",
        "reason": "We only call the API from our Frankfurt servers.",
    },
    "zh-hans": {
        "statement": "我已阅读本通知，并了解来自中国、伊朗、俄罗斯、叙利亚、古巴、朝鲜、澳门、香港的 API 流量将自 2027年7月9日 "
        "起被阻止。",
        "memo": "的流量将被阻止。",
        "done": "已于",
        "receipt": "您的答复回执",
        "object": "我反对",
        "objected": "对此备忘录提出了反对",
        "reason": "我们只从法兰克福的服务器调用 API。",
    },
}


def test_a_developer_on_a_phone_reads_the_statement_acknowledges_and_keeps_a_receipt_another_objects(
    browser: Any, site: str
) -> None:
    """In English, then in Simplified Chinese (one test, so both languages' screenshots stay)."""
    people = {
        language: (
            make_developer(f"reader-{language}", "RU", language, name="Olga Petrova"),
            make_developer(f"objector-{language}", "CN", language, name="Wang Wei"),
        )
        for language in WORDS
    }
    memo = make_memo()
    sent_memo(memo, at=timezone.now() - dt.timedelta(hours=1))
    errors: list[str] = []
    readers = {
        language: read_acknowledge_and_object(browser, site, memo, language, reader, objector, errors)
        for language, (reader, objector) in people.items()
    }
    # Withdrawn later: the page says so above the text as sent, and offers no answer.
    memo_withdraw(memo=memo, by=None, reason="The list of regions was wrong.")
    for language, banner in [("en", "This memo was withdrawn on"), ("zh-hans", "此备忘录已于")]:
        page = readers[language].page
        page.reload()
        assert banner in page.inner_text("#closed") and "The list of regions was wrong." in page.inner_text("#closed")
        assert page.locator("button[value=acknowledged]").count() == 0
        readers[language].shot("withdrawn")
    assert errors == []


def read_acknowledge_and_object(
    browser: Any, site: str, memo: Any, language: str, reader: Any, objector: Any, errors: list[str]
) -> Person:
    """The reader acknowledges and keeps the receipt, the objector objects: the reader's window."""
    words = WORDS[language]
    short = "en" if language == "en" else "zh"

    olga = Person(browser, site, f"reader-{short}", errors, **PHONE)
    olga.page.goto(ack_url(memo.pk, reader.pk))
    assert words["memo"] in olga.page.inner_text(".memo")
    statement = olga.page.locator("#statement")
    assert statement.inner_text() == words["statement"]
    # Beside the button: on the screen together once scrolled to it, on a phone.
    button = olga.page.locator("button[value=acknowledged]")
    button.scroll_into_view_if_needed()
    assert statement.is_visible() and button.is_visible()
    box, button_box = statement.bounding_box(), button.bounding_box()
    assert box is not None and button_box is not None and 0 <= button_box["y"] - (box["y"] + box["height"]) < 60
    olga.shot("statement")
    button.tap()
    olga.page.wait_for_selector("#acknowledge .done")
    assert words["done"] in olga.page.inner_text("#acknowledge")
    olga.shot("acknowledged")
    with olga.page.expect_download() as download:
        olga.page.tap("#receipt")
    receipt = Path(download.value.path()).read_text("utf-8")
    assert download.value.suggested_filename == f"receipt-memo-{memo.pk}.txt"
    assert receipt.startswith(words["receipt"]) and words["statement"] in receipt
    ack = Answer.objects.get(developer=reader)
    assert ack.statement_hash == hashlib.sha256(words["statement"].encode()).hexdigest()
    assert f"statement_hash: {ack.statement_hash}" in receipt and f"page_hash: {ack.page_hash}" in receipt
    assert not ack.suspected_automation, ack.automation_reasons

    wang = Person(browser, site, f"objector-{short}", errors, **PHONE)
    wang.page.goto(ack_url(memo.pk, objector.pk))
    wang.page.tap("#object summary")
    assert wang.page.inner_text("#object summary") == words["object"]
    wang.page.fill("#object-reason", words["reason"])
    wang.shot("objection-written")
    wang.page.tap("button[value=objects]")
    wang.page.wait_for_selector("#object .note")
    assert words["objected"] in wang.page.inner_text("#object")
    assert words["reason"] in wang.page.inner_text("#object .quote")
    wang.shot("objected")
    objection = Answer.objects.get(developer=objector)
    assert (objection.response, objection.comment) == ("objects", words["reason"])
    return olga
