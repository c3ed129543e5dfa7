"""Evidence: the hash chain, verify_evidence finding tampering, and the export."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from memo_service.memos.acks import ack_url
from memo_service.memos.evidence import evidence_verify
from memo_service.memos.models import Acknowledgement, Delivery, EvidenceRecord, Memo
from tests.test_tracking import BOUNCE, mailgun_event, post

pytestmark = pytest.mark.django_db
PHONE = "Mozilla/5.0 (iPhone) Mobile Safari"


@pytest.fixture
def evidence(client, memo, developers, mailgun):
    """CN: delivered and acknowledged; RU: bounced, then disputed its region."""
    cache.clear()
    Memo.objects.filter(pk=memo.pk).update(status="sent", content_hash="c" * 64)
    cn = Delivery.objects.create(memo=memo, developer=developers["cn"], status="sent", country="CN",
                                 sent_at=timezone.now() - timedelta(hours=1), provider_message_id="<cn@x>", reason="CN is in region X")
    ru = Delivery.objects.create(memo=memo, developer=developers["ru"], status="sent", country="RU",
                                 sent_at=timezone.now() - timedelta(hours=1), provider_message_id="<ru@x>", reason="RU is in region X")
    post(client, mailgun_event("delivered", cn, message_id="<cn@x>"))
    post(client, mailgun_event("failed", ru, message_id="<ru@x>", **BOUNCE))
    for developer, data in [(developers["cn"], {"response": "acknowledged"}),
                            (developers["ru"], {"response": "disputes_region", "country": "KZ", "comment": "=cmd()"})]:
        client.post(ack_url(memo.pk, developer.pk).removeprefix("http://testserver"),
                    {"interacted": "1", **data}, HTTP_USER_AGENT=PHONE)
    memo.refresh_from_db()
    return memo


def verify(memo):
    out = io.StringIO()
    call_command("verify_evidence", memo.slug, stdout=out)
    return out.getvalue()


def test_every_answer_and_event_is_chained_and_the_chain_verifies(evidence):
    records = list(EvidenceRecord.objects.filter(memo=evidence).order_by("seq"))
    assert [r.kind for r in records] == ["event", "event", "answer", "answer"]
    assert records[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in zip(records, records[1:]))
    assert "evidence verifies: 4 records" in verify(evidence)


def test_an_answer_altered_with_raw_sql_is_found(evidence):
    ack = Acknowledgement.objects.get(response="acknowledged")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE memos_acknowledgement SET ip_address = '192.0.2.66' WHERE id = %s", [ack.pk])
    record = EvidenceRecord.objects.get(kind="answer", object_id=ack.pk)
    with pytest.raises(CommandError, match=f"record {record.seq} \\(answer {ack.pk}\\): the answer was altered after it was recorded \\(ip_address\\)"):
        verify(evidence)


def test_a_record_altered_to_match_is_found_by_its_hash(evidence):
    ack = Acknowledgement.objects.get(response="acknowledged")
    record = EvidenceRecord.objects.get(kind="answer", object_id=ack.pk)
    payload = {**record.payload, "ip_address": "192.0.2.66"}
    with connection.cursor() as cursor:
        cursor.execute("UPDATE memos_acknowledgement SET ip_address = '192.0.2.66' WHERE id = %s", [ack.pk])
        cursor.execute("UPDATE memos_evidencerecord SET payload = %s WHERE id = %s", [json.dumps(payload), record.pk])
    result = evidence_verify(evidence)
    assert not result.ok and result.problem == f"record {record.seq} (answer {ack.pk}): its hash does not match its content (the record was altered)"


def test_a_deleted_record_and_an_answer_added_behind_its_back_are_found(evidence):
    first = EvidenceRecord.objects.get(memo=evidence, seq=2)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM memos_evidencerecord WHERE id = %s", [first.pk])
    assert evidence_verify(evidence).problem == "record 2 is missing (next is 3)"


def test_an_answer_inserted_without_a_record_is_found(evidence, developers):
    Acknowledgement.objects.create(memo=evidence, developer=developers["ru"], response="acknowledged", content_hash="x")
    assert "is not in the chain" in evidence_verify(evidence).problem


def test_erasing_a_developer_keeps_the_evidence_verifying(evidence):
    call_command("erase_developer", "cn-1", stdout=io.StringIO())
    assert "evidence verifies: 4 records" in verify(evidence)


def test_the_csv_export_has_one_row_per_recipient_with_their_answer(evidence):
    out = io.StringIO()
    call_command("export_evidence", evidence.slug, "--format", "csv", stdout=out)
    rows = {r["developer"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert set(rows) == {"cn-1", "ru-1"}
    cn, ru = rows["cn-1"], rows["ru-1"]
    assert (cn["email"], cn["country_at_send"], cn["delivery_status"], cn["provider_message_id"]) == (
        "cn-1@example.com", "CN", "delivered", "<cn@x>")
    assert (cn["answer"], cn["content_hash"], cn["suspected_automation"], cn["user_agent"]) == (
        "acknowledged", "c" * 64, "no", PHONE)
    assert (ru["delivery_status"], ru["answer"]) == ("bounced", "disputes_region")


def test_the_json_export_carries_every_delivery_and_answer(evidence):
    out = io.StringIO()
    call_command("export_evidence", str(evidence.pk), "--format", "json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["content_hash"] == "c" * 64
    ru = next(r for r in document["recipients"] if r["developer"] == "ru-1")
    assert ru["deliveries"][0]["status"] == "bounced"
    assert ru["answers"][0]["at"] and ru["answers"][0]["content_hash"] == "c" * 64
    assert (ru["answers"][0]["response"], ru["answers"][0]["country_claimed"], ru["answers"][0]["comment"]) == (
        "disputes_region", "KZ", "=cmd()")


def test_the_admin_downloads_and_verifies_the_evidence(admin_client, evidence):
    csv_response = admin_client.get(reverse("admin:memos_memo_evidence", args=[evidence.pk, "csv"]))
    body = b"".join(csv_response.streaming_content).decode()
    assert "cn-1@example.com" in body
    page = admin_client.get(reverse("admin:memos_memo_verify", args=[evidence.pk]), follow=True).content.decode()
    assert "Evidence verifies: 4 records" in page
    assert admin_client.get(reverse("admin:memos_memo_evidence", args=[evidence.pk, "xml"])).status_code == 404
