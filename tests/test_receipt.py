"""The receipt of a developer's answers: downloaded from their page (only by them, only
after an answer), and emailed when the memo asks for it, in their language, with the
evidence record that names it."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.test.client import Client
from django.utils import timezone

from memo_service.memos.answer.statement import page_hash
from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.models import Answer, Delivery, EvidenceRecord, Memo, Notification
from memo_service.memos.notify.notifications import notification_hash
from tests.conftest import Provider, found, make_memo, sent_memo
from tests.test_assent import AN_HOUR_AGO, open_page, post

pytestmark = pytest.mark.django_db


def answer(client: Client, page: str, **data: str) -> None:
    response = post(client, page, **data)
    assert response.status_code == 303, response.content.decode()[:500]


def test_the_receipt_holds_the_text_the_statement_the_answer_and_how_to_check_them(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers["ru"])
    answer(client, page, response="acknowledged")
    ack = Answer.objects.get()
    assert 'id="receipt"' in client.get(page).content.decode()  # the page offers it

    response = client.get(f"{page}receipt/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="receipt-memo-{memo.pk}.txt"'
    assert "no-store" in response["Cache-Control"] and response["Referrer-Policy"] == "no-referrer"
    receipt = response.content.decode("utf-8")
    statement = found(r"== The statement beside the Acknowledge button ==\n\n(.*)\n", receipt, 1)
    assert hashlib.sha256(statement.encode()).hexdigest() == ack.statement_hash
    assert "Access from Russia ends 2027-07-09" in receipt  # the subject as sent
    assert "Dear Olga Petrova,\nTraffic from Russia will be blocked." in receipt  # the text as sent
    assert f"- Acknowledged, {ack.created_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC" in receipt
    delivery = Delivery.objects.get(memo=memo, developer=developers["ru"])
    for name, value in [
        ("content_hash", memo.content_hash),
        ("text_hash", delivery.text_hash),
        ("statement_hash", ack.statement_hash),
        ("page_hash", page_hash("en")),
    ]:
        assert f"{name}: {value}" in receipt
    assert "sha256sum" in receipt and "each followed by one NUL byte" in receipt
    assert "signed record in the evidence chain" in receipt
    token = ack_url(memo.pk, developers["ru"].pk).rsplit("/", 2)[-2].split(":")[0]
    assert token not in receipt  # no link that answers for them


def test_every_answer_is_on_the_receipt_with_its_reason(client: Client, memo: Memo, developers: dict[str, Any]) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers["ru"])
    answer(client, page, response="disputes_region", country="KZ", comment="We moved to Almaty")
    answer(client, page, response="objects", comment="The date is too early for us.")
    receipt = client.get(f"{page}receipt/").content.decode()
    assert "- Said the region is wrong," in receipt and "Country given: Kazakhstan (KZ)" in receipt
    assert "- Objected," in receipt and "Comment: The date is too early for us." in receipt
    assert "statement_hash:" not in receipt.split("== Hashes ==")[0]  # nothing was acknowledged


def test_the_receipt_is_refused_before_any_answer_and_to_anyone_without_the_cookie(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers["ru"])
    before = client.get(f"{page}receipt/")
    assert before.status_code == 404 and "There is no answer to give a receipt for yet" in before.content.decode()
    answer(client, page, response="acknowledged")

    stranger = Client()
    assert stranger.get(f"{page}receipt/").status_code == 400  # no cookie: open the link from the email
    stranger.cookies[f"memo_ack_{memo.pk}"] = "forged:token:value"
    assert stranger.get(f"{page}receipt/").status_code == 400
    other = make_memo(slug="another-memo")
    assert client.get(f"/ack/memo/{other.pk}/receipt/").status_code == 400  # their cookie is for this memo only
    assert client.post(f"{page}receipt/").status_code == 405  # GET only
    assert client.get("/ack/memo/99999/receipt/").status_code == 400


def test_a_chinese_developer_gets_the_receipt_in_chinese(
    client: Client, memo: Memo, developers: dict[str, Any]
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers["cn"])
    answer(client, page, response="acknowledged")
    receipt = client.get(f"{page}receipt/").content.decode()
    assert receipt.startswith("您的答复回执\n")
    assert "来自中国的流量将被阻止。" in receipt and "已确认" in receipt
    assert f"page_hash: {page_hash('zh-hans')}" in receipt


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_memo_that_asks_for_it_emails_the_receipt_in_the_developers_language(
    client: Client, developers: dict[str, Any], mailgun: Provider, eager: None
) -> None:
    memo = make_memo(email_receipt=True)
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    sent_before = len(mailgun.accepted)
    page = open_page(client, memo, developers["cn"])
    answer(client, page, response="acknowledged")

    notification = Notification.objects.get(kind=Notification.Kind.RECEIPT)
    assert (notification.developer, notification.language) == (developers["cn"], "zh-hans")
    assert notification.status == Notification.Status.SENT
    assert notification.subject == "您的答复回执：来自中国的访问将被阻止"
    assert notification.text == client.get(f"{page}receipt/").content.decode()  # the file, by email
    assert notification.text_hash == notification_hash(notification.subject, notification.text)
    assert [a.first("to") for a in mailgun.accepted[sent_before:]] == ["cn-1@example.com"]
    record = EvidenceRecord.objects.get(memo=memo, kind=EvidenceRecord.Kind.NOTICE)
    assert record.object_id == notification.pk
    assert record.payload["text_hash"] == notification.text_hash and record.payload["developer"] == "cn-1"


def test_no_receipt_email_unless_the_memo_asks_for_it(client: Client, memo: Memo, developers: dict[str, Any]) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    answer(client, open_page(client, memo, developers["ru"]), response="acknowledged")
    assert not Notification.objects.filter(kind=Notification.Kind.RECEIPT).exists()
    assert not EvidenceRecord.objects.filter(kind=EvidenceRecord.Kind.NOTICE).exists()


def test_the_statement_acknowledged_is_kept_with_the_answer_when_an_upgrade_rewords_the_default(
    client: Client, memo: Memo, developers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    page = open_page(client, memo, developers["ru"])
    answer(client, page, response="acknowledged")
    ack = Answer.objects.get()
    # A later release words the default statement (or names a country) differently.
    monkeypatch.setattr("memo_service.memos.answer.statement.default_statement", lambda memo, language: "Reworded.")

    receipt = client.get(f"{page}receipt/").content.decode("utf-8")
    statement = found(r"== The statement beside the Acknowledge button ==\n\n(.*)\n", receipt, 1)
    assert statement == ack.statement != "Reworded."
    assert hashlib.sha256(statement.encode()).hexdigest() == ack.statement_hash
    record = EvidenceRecord.objects.get(memo=memo, kind=EvidenceRecord.Kind.ANSWER)
    assert record.payload["statement"] == ack.statement  # the chain holds the text itself
    out = io.StringIO()
    call_command("export_evidence", memo.slug, "--format", "json", stdout=out)
    exported = [a for r in json.loads(out.getvalue())["recipients"] for a in r["answers"]]
    assert [a["statement"] for a in exported] == [ack.statement]


def test_an_answer_without_a_statement_keeps_none(client: Client, memo: Memo, developers: dict[str, Any]) -> None:
    sent_memo(memo, at=timezone.now() - AN_HOUR_AGO)
    answer(client, open_page(client, memo, developers["ru"]), response="needs_help", comment="Which endpoints?")
    help_request = Answer.objects.get()
    assert help_request.statement == help_request.statement_hash == ""
    assert "statement" not in EvidenceRecord.objects.get(memo=memo, kind=EvidenceRecord.Kind.ANSWER).payload
