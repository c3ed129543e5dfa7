"""What the click means, on the developer's page: the statement of assent beside the
Acknowledge button, hashed into the answer with the page itself; "I object" with its
reason; and the pages of a withdrawn, cancelled or correcting memo, which say so."""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import io
import re
from typing import Any

import pytest
from django.core.management import call_command
from django.test import TestCase
from django.test.client import Client
from django.utils import timezone

from memo_service.memos.answer.answers import ANSWERS_CLOSED, answers_closed_error
from memo_service.memos.answer.statement import name_order, page_hash
from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.approval import memo_edited
from memo_service.memos.compose.sources import memo_content, memo_content_hash
from memo_service.memos.evidence.sequencer import evidence_seal
from memo_service.memos.models import Answer, EvidenceRecord, Memo, MemoTranslation
from memo_service.memos.send.control import memo_cancel
from memo_service.memos.withdrawal import memo_withdraw
from tests.conftest import approve, found, make_memo, sent_delivery, sent_memo
from tests.test_admin import memo_form

pytestmark = pytest.mark.django_db
PHONE = "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36"
AN_HOUR_AGO = dt.timedelta(hours=1)


def open_page(client: Client, memo: Memo, developer: Any) -> str:
    """The developer follows their email's link: the page, as their browser shows it."""
    client.get(ack_url(memo.pk, developer.pk).removeprefix("http://testserver"))
    return f"/ack/memo/{memo.pk}/"


def post(client: Client, page: str, **data: str) -> Any:
    return client.post(page, {"interacted": "1", **data}, HTTP_USER_AGENT=PHONE)


def statement_shown(content: str) -> str:
    """The statement beside the button, as the browser shows the page's text."""
    return html.unescape(found(r'<p class="statement" id="statement">(.*?)</p>', content, 1))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    "who, expected",
    [
        (
            "ru",
            "I have read this notice and understand that API traffic from China, Cuba, Hong Kong, Iran, Macao, "
            "North Korea, Russia, Syria will be blocked from July 9, 2027.",
        ),
        # Chinese names in the order of their characters (radical and strokes).
        (
            "cn",
            "我已阅读本通知，并了解来自中国、伊朗、俄罗斯、叙利亚、古巴、朝鲜、澳门、香港的 API 流量将自 2027年7月9日 "
            "起被阻止。",
        ),
    ],
)
def test_the_default_statement_is_shown_beside_the_button_and_its_hash_recorded(
    client: Client, memo: Memo, developers: dict[str, Any], who: str, expected: str
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers[who])
    shown = client.get(page).content.decode()
    assert statement_shown(shown) == expected
    assert 'value="acknowledged"' in shown.split('id="statement"')[1]  # the button is right after it
    assert not Answer.objects.exists()  # a GET never records

    assert post(client, page, response="acknowledged").status_code == 303
    answer = Answer.objects.get()
    assert answer.statement_hash == sha256(expected)
    assert answer.page_hash == page_hash("zh-hans" if who == "cn" else "en")
    again = client.get(page).content.decode()
    assert "Already acknowledged" in again or "已于" in again
    assert statement_shown(again) == expected  # what they stated stays beside their answer


def test_a_written_statement_in_each_language_is_the_one_shown_and_hashed(
    client: Client, developers: dict[str, Any]
) -> None:
    memo = make_memo(statement="I understand that from 9 July 2027 our API calls from China and Russia fail.")
    MemoTranslation.objects.filter(memo=memo).update(
        statement="我知道自2027年7月9日起，来自中国和俄罗斯的 API 调用将失败。"
    )
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    hashes = {}
    for who in ("ru", "cn"):
        person = Client()
        page = open_page(person, memo, developers[who])
        shown = statement_shown(person.get(page).content.decode())
        post(person, page, response="acknowledged")
        hashes[who] = Answer.objects.get(developer=developers[who]).statement_hash
        assert hashes[who] == sha256(shown)
    assert hashes["ru"] == sha256("I understand that from 9 July 2027 our API calls from China and Russia fail.")
    assert hashes["cn"] == sha256("我知道自2027年7月9日起，来自中国和俄罗斯的 API 调用将失败。")


def test_a_written_statement_is_approved_content_and_a_blank_one_changes_no_old_hash(memo: Memo) -> None:
    before = memo_content_hash(memo)
    assert "statement" not in memo_content(memo)["languages"]["en"]  # approvals before statements keep their hash
    memo.statement = "I understand."
    assert memo_content(memo)["languages"]["en"]["statement"] == "I understand."
    assert memo_content_hash(memo) != before
    translation = memo.translations.get()
    translation.statement = "我明白。"
    translation.save()
    assert memo_content(Memo.objects.get(pk=memo.pk))["languages"]["zh-hans"]["statement"] == "我明白。"


def test_editing_the_statement_after_approval_voids_it(admin_client: Client, memo: Memo) -> None:
    approve(memo)
    page = admin_client.get(f"/admin/memos/memo/{memo.pk}/change/")
    assert 'name="statement"' in page.content.decode() and 'name="email_receipt"' in page.content.decode()
    assert 'name="translations-0-statement"' in page.content.decode()
    memo.statement = "I understand."
    Memo.objects.filter(pk=memo.pk).update(statement=memo.statement)
    memo_edited(memo=memo, by=None, fields=["statement"])
    memo.refresh_from_db()
    assert memo.status == Memo.Status.DRAFT


def test_the_page_hash_is_stable_and_kept_with_every_answer_given_on_the_page(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers["ru"])
    post(client, page, response="needs_help", comment="Which regions exactly?")
    post(client, page, response="acknowledged")
    help_, ack = Answer.objects.order_by("id")
    assert help_.page_hash == ack.page_hash == page_hash("en") != page_hash("zh-hans")
    assert help_.statement_hash == ""  # a question states nothing
    assert re.fullmatch(r"[0-9a-f]{64}", ack.page_hash)


def test_an_objection_needs_its_reason(client: Client, memo: Memo, developers: dict[str, Any]) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers["ru"])
    refused = post(client, page, response="objects", comment="   ")
    assert refused.status_code == 400 and "Tell us why you object." in refused.content.decode()
    assert not Answer.objects.exists()

    post(client, page, response="objects", comment="We never call the API from Russia.")
    objection = Answer.objects.get()
    assert (objection.response, objection.comment) == ("objects", "We never call the API from Russia.")
    shown = client.get(page).content.decode()
    assert "you objected to this memo" in shown and "We never call the API from Russia." in shown
    assert 'value="acknowledged"' in shown  # they may still acknowledge


def test_an_objection_in_chinese_gets_its_error_in_chinese(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers["cn"])
    refused = post(client, page, response="objects", comment="")
    assert refused.status_code == 400 and "请告诉我们您反对的理由。" in refused.content.decode()
    assert "我反对" in client.get(page).content.decode()


def test_a_withdrawn_memo_says_so_shows_the_text_and_takes_no_answers(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers["ru"])
    post(client, page, response="needs_help", comment="Which regions exactly?")
    withdrawn(memo, "The list of regions was wrong.")

    shown = client.get(page).content.decode()
    assert f"This memo was withdrawn on {timezone.now():%Y-%m-%d}." in shown
    assert "The list of regions was wrong." in shown
    assert "Traffic from Russia will be blocked." in shown  # the text as it was sent
    assert "you asked for help" in shown  # the earlier answer stays
    assert 'value="acknowledged"' not in shown and 'value="objects"' not in shown
    refused = post(client, page, response="acknowledged")
    assert refused.status_code == 400 and "This memo was withdrawn: it takes no answers." in refused.content.decode()
    assert list(Answer.objects.values_list("response", flat=True)) == ["needs_help"]


def test_a_withdrawn_memo_refuses_answers_in_chinese_too(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers["cn"])
    withdrawn(memo, "地区列表有误。")
    shown = client.get(page).content.decode()
    assert f"此备忘录已于 {timezone.now():%Y-%m-%d} 撤回。" in shown
    refused = post(client, page, response="acknowledged")
    assert refused.status_code == 400 and "此备忘录已撤回，不再接受答复。" in refused.content.decode()
    assert not Answer.objects.exists()


def test_a_cancelled_memo_whose_email_arrived_says_so_and_takes_no_answers(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_delivery(memo, developers["ru"], "delivered", at=timezone.now() - AN_HOUR_AGO)  # cn's still queued
    memo_cancel(memo=memo, by=None)
    page = open_page(client, memo, developers["ru"])
    shown = client.get(page).content.decode()
    assert f"This memo was cancelled on {timezone.now():%Y-%m-%d}." in shown
    assert 'value="acknowledged"' not in shown
    refused = post(client, page, response="acknowledged")
    assert refused.status_code == 400 and "This memo was cancelled: it takes no answers." in refused.content.decode()
    assert not Answer.objects.exists()


def test_a_correction_says_which_notice_it_corrects_and_when_that_was_sent(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_at = timezone.now() - dt.timedelta(days=3)
    sent_memo(memo, at=sent_at)
    correction = make_memo(slug="regions-blocked-corrected", supersedes=memo)
    sent_memo(correction, at=timezone.now() - AN_HOUR_AGO)
    shown = client.get(open_page(client, correction, developers["ru"])).content.decode()
    assert (
        f"This notice corrects an earlier one, “Access from Russia ends 2027-07-09”, sent to you on {sent_at:%Y-%m-%d}."
        in html.unescape(shown)
    )
    chinese = Client()
    shown = chinese.get(open_page(chinese, correction, developers["cn"])).content.decode()
    assert f"本通知更正了 {sent_at:%Y-%m-%d} 发给您的前一份通知“来自中国的访问将被阻止”。" in html.unescape(shown)


def test_the_country_list_is_sorted_by_the_names_in_the_pages_language(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    for who, first_names in [
        ("ru", ["Afghanistan", "Åland Islands", "Albania"]),
        ("cn", None),
    ]:
        person = Client()
        content = person.get(open_page(person, memo, developers[who])).content.decode()
        select = found(r'(?s)<select id="country" name="country">(.*?)</select>', content, 1)
        names = [html.unescape(n) for n in re.findall(r'<option value="[A-Z]{2}"[^>]*>([^<]*)</option>', select)]
        assert len(names) > 200
        if first_names:
            assert names[:3] == first_names
        assert names == sorted(names, key=name_order)
        if who == "cn":
            assert "中国" in names and "China" not in names


def test_verify_evidence_passes_with_the_statement_and_page_hashes(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    for who, response, comment in [("ru", "acknowledged", ""), ("cn", "objects", "不适用于我们")]:
        person = Client()
        post(person, open_page(person, memo, developers[who]), response=response, comment=comment)
    with TestCase.captureOnCommitCallbacks(execute=True):
        evidence_seal(memo_id=memo.pk)
    records = EvidenceRecord.objects.filter(memo=memo, kind=EvidenceRecord.Kind.ANSWER).order_by("id")
    ack = Answer.objects.get(response="acknowledged")
    assert records[0].payload["statement_hash"] == ack.statement_hash
    assert records[0].payload["page_hash"] == ack.page_hash == page_hash("en")
    assert records[1].payload["page_hash"] == page_hash("zh-hans")
    out = io.StringIO()
    call_command("verify_evidence", memo.slug, stdout=out)
    assert "evidence verifies" in out.getvalue() and "chain intact" in out.getvalue(), out.getvalue()


def withdrawn(memo: Memo, reason: str) -> None:
    """The memo withdrawn by an admin."""
    memo_withdraw(memo=memo, by=None, reason=reason)


def test_a_memo_with_its_own_statement_is_refused_with_a_translation_without_one(admin_client: Client) -> None:
    translation = {
        "translations-TOTAL_FORMS": "1",
        "translations-0-language": "zh-hans",
        "translations-0-subject": "通知",
        "translations-0-html_body": "<p>好</p>",
        "translations-0-text_body": "好",
    }
    response = admin_client.post("/admin/memos/memo/add/", memo_form(statement="I understand.", **translation))
    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.errors
    assert "write this translation's" in errors[0]["statement"][0]
    assert not Memo.objects.exists()

    translation["translations-0-statement"] = "我明白。"
    response = admin_client.post("/admin/memos/memo/add/", memo_form(statement="I understand.", **translation))
    assert response.status_code == 302
    assert Memo.objects.get().translations.get().statement == "我明白。"


@pytest.mark.parametrize("status", Memo.Status.values)
def test_one_list_says_which_memos_take_no_answers(status: str) -> None:
    closed = answers_closed_error(status)
    assert (closed is not None) == (status in ANSWERS_CLOSED) == (status in ("withdrawn", "cancelled"))
    assert closed is None or status in closed["response"]


def test_a_cookie_moved_to_another_memos_page_opens_neither_its_page_nor_its_receipt(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers["ru"])
    post(client, page, response="acknowledged")
    other = make_memo(slug="another-memo")
    client.cookies[f"memo_ack_{other.pk}"] = client.cookies[f"memo_ack_{memo.pk}"].value
    for response in (
        client.get(f"/ack/memo/{other.pk}/"),
        client.post(f"/ack/memo/{other.pk}/", {"response": "acknowledged"}),
        client.get(f"/ack/memo/{other.pk}/receipt/"),
    ):
        assert response.status_code == 400 and "ack/reopen.html" in [t.name for t in response.templates]
    assert Answer.objects.filter(memo=other).count() == 0
