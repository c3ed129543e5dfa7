"""Evidence: the hash chain, verify_evidence finding tampering, and the export."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.compose.context import developer_context, stored_values
from memo_service.memos.delivery_status import EmailText, deliveries_record_sent, delivery_claim
from memo_service.memos.evidence import checkpoints
from memo_service.memos.evidence.append import pending_record
from memo_service.memos.evidence.checkpoints import GENESIS, record_hash
from memo_service.memos.evidence.payloads import HANDOVER_FIELDS, handover_entries
from memo_service.memos.evidence.sequencer import evidence_seal, public_key
from memo_service.memos.evidence.verify import evidence_verify, evidence_verify_against
from memo_service.memos.models import (
    Answer,
    Delivery,
    EvidenceCheckpoint,
    EvidenceRecord,
    Memo,
)
from tests.conftest import add_region, dispatched, sent_memo, tracking_event
from tests.test_tracking import BOUNCE, mailgun_event, post

pytestmark = pytest.mark.django_db
PHONE = "Mozilla/5.0 (iPhone) Mobile Safari"


@pytest.fixture
def evidence(client, memo, developers, mailgun):
    """Approved and sent an hour ago, then CN: delivered and acknowledged; RU: bounced,
    then disputed its region. The sequencer runs after each step, as it would a second
    later: record 1 the approval, 2-3 handovers (anymail's Mailgun backend makes a call
    per email), 4-5 CN's event and status change, 6-7 RU's, 8 CN's answer, 9 RU's, each
    step sealed by its own checkpoint."""
    cache.clear()
    sent_memo(memo, at=timezone.now() - timedelta(hours=1))
    cn, ru = (Delivery.objects.get(memo=memo, country=country) for country in ("CN", "RU"))
    seal(memo)
    post(client, mailgun_event("delivered", cn, message_id=cn.provider_message_id))
    seal(memo)
    post(client, mailgun_event("failed", ru, message_id=ru.provider_message_id, **BOUNCE))
    seal(memo)
    for developer, data in [
        (developers["cn"], {"response": "acknowledged"}),
        (developers["ru"], {"response": "disputes_region", "country": "KZ", "comment": "=cmd()"}),
    ]:
        client.post(
            ack_url(memo.pk, developer.pk).removeprefix("http://testserver"),
            {"interacted": "1", **data},
            HTTP_USER_AGENT=PHONE,
        )
        seal(memo)
    memo.refresh_from_db()
    return memo


def seal(memo):
    """The sequencer as its task runs it: each step committed, its head then published."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        evidence_seal(memo_id=memo.pk)


def verify(memo, *args):
    out = io.StringIO()
    call_command("verify_evidence", memo.slug, *args, stdout=out)
    return out.getvalue()


def export(memo, path):
    out = io.StringIO()
    call_command("export_evidence", memo.slug, "--format", "json", stdout=out)
    path.write_text(out.getvalue())
    return path


def sql(statement, *params):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def rehash_from(memo, seq):
    """What someone with write access to the database does to hide an edit: recompute
    every record's hash from `seq` on."""
    prev = EvidenceRecord.objects.get(memo=memo, seq=seq - 1).hash if seq > 1 else GENESIS
    for record in EvidenceRecord.objects.filter(memo=memo, seq__gte=seq).order_by("seq"):
        new = record_hash(prev, record.kind, record.object_id, record.payload)
        EvidenceRecord.objects.filter(pk=record.pk).update(prev_hash=prev, hash=new)
        prev = new


def record(memo, seq):
    return EvidenceRecord.objects.get(memo=memo, seq=seq)


def claimed(memo):
    """The memo approved and dispatched, and each of its emails claimed for a provider
    call as a send task claims them (sending), in the audience's order."""
    dispatched(memo)
    for delivery_id in Delivery.objects.filter(memo=memo).values_list("id", flat=True):
        assert delivery_claim(delivery_id=delivery_id)
    return list(Delivery.objects.filter(memo=memo).select_related("developer").order_by("id"))


def hand_over(sent, message_id, accepted_at=None):
    """What a send records of one provider call that took (delivery id, text hash), as
    `BatchSender.send` does: each email's text (in the row's language, with its
    developer's values) kept with its acceptance and the call's handover record."""
    texts = {}
    for delivery_id, text_hash in sent:
        delivery = Delivery.objects.select_related("developer").get(pk=delivery_id)
        values = stored_values(developer_context(delivery.developer))
        texts[delivery_id] = EmailText(delivery.language, values, text_hash)
    deliveries_record_sent(delivery_ids=list(texts), message_id=message_id, texts=texts, accepted_at=accepted_at)


def emails(handover):
    """What a handover record says of each email it lists, as verification reads it."""
    return [entry for _, entry in handover_entries(handover.kind, handover.payload)]


def status_records(memo, ids):
    """Pending status records as a tracking receiver writes them (tagged), for the
    sequencer's own tests."""
    EvidenceRecord.objects.bulk_create(
        pending_record(memo_id=memo.pk, kind="status", object_id=n, payload={"delivery": n, "status": "delivered"})
        for n in ids
    )


def handover_records(memo, firsts, size):
    """Pending handovers of `size` emails each, starting at each of `firsts`."""
    EvidenceRecord.objects.bulk_create(
        pending_record(
            memo_id=memo.pk,
            kind="handover",
            object_id=n,
            payload={"fields": list(HANDOVER_FIELDS), "lines": "\n".join(f"[{i}]" for i in range(n, n + size))},
            size=size,
        )
        for n in firsts
    )


def test_every_answer_event_handover_and_status_change_is_chained_and_sealed(evidence):
    records = list(EvidenceRecord.objects.filter(memo=evidence).order_by("seq"))
    assert [r.kind for r in records] == [
        "approval",
        "handover",
        "handover",
        "event",
        "status",
        "event",
        "status",
        "answer",
        "answer",
    ]
    assert records[0].prev_hash == "0" * 64
    assert records[0].payload["content_hash"] == evidence.content_hash
    assert (
        records[0].payload["content"]["languages"]["zh-hans"]["subject"]
        == "来自{{ developer.country_name }}的访问将被阻止"
    )
    assert all(b.prev_hash == a.hash for a, b in zip(records, records[1:], strict=False))
    cn = Delivery.objects.get(country="CN")
    assert records[1].object_id == cn.pk
    sent_at = cn.sent_at
    assert sent_at is not None
    assert emails(records[1]) == [
        {
            "delivery": cn.pk,
            "developer": cn.developer_id,
            "country": "CN",
            "language": "zh-hans",
            "message_id": cn.provider_message_id,
            "sent_at": sent_at.isoformat(),
            "text_hash": cn.text_hash,
            "reason": cn.reason,
        }
    ]
    assert (records[4].payload["delivery"], records[4].payload["status"]) == (cn.pk, "delivered")
    assert list(EvidenceCheckpoint.objects.filter(memo=evidence).order_by("seq").values_list("seq", flat=True)) == [
        3,
        5,
        7,
        8,
        9,
    ]
    assert "evidence verifies: 9 records, chain intact, sealed by 5 signed checkpoints" in verify(evidence)


def test_records_not_yet_chained_are_reported_pending_never_intact(evidence, client, developers):
    help_post = {"interacted": "1", "response": "needs_help", "comment": "call me"}
    client.post(
        ack_url(evidence.pk, developers["ru"].pk).removeprefix("http://testserver"), help_post, HTTP_USER_AGENT=PHONE
    )
    assert EvidenceRecord.objects.filter(memo=evidence, seq__isnull=True).count() == 1
    out = verify(evidence, "--no-seal")
    assert "evidence verifies up to record 9" in out and "1 records pending, not yet chained" in out
    assert "intact" not in out
    assert "evidence verifies: 10 records, chain intact" in verify(evidence)  # chains them first


def test_an_answer_altered_with_raw_sql_is_found(evidence):
    ack = Answer.objects.get(response="acknowledged")
    sql("UPDATE memos_answer SET ip_address = '192.0.2.66' WHERE id = %s", ack.pk)
    with pytest.raises(
        CommandError,
        match=f"record 8 \\(answer {ack.pk}\\): the answer was altered after it was recorded \\(ip_address\\)",
    ):
        verify(evidence)


def test_a_record_altered_to_match_is_found_by_its_hash(evidence):
    ack = Answer.objects.get(response="acknowledged")
    altered = record(evidence, 8)
    sql("UPDATE memos_answer SET ip_address = '192.0.2.66' WHERE id = %s", ack.pk)
    sql(
        "UPDATE memos_evidencerecord SET payload = %s WHERE id = %s",
        json.dumps({**altered.payload, "ip_address": "192.0.2.66"}),
        altered.pk,
    )
    result = evidence_verify(evidence)
    assert (
        not result.ok
        and result.problem
        == f"record 8 (answer {ack.pk}): its hash does not match its content (the record was altered)"
    )


def test_a_deleted_record_is_found(evidence):
    sql("DELETE FROM memos_evidencerecord WHERE id = %s", record(evidence, 3).pk)
    assert evidence_verify(evidence).problem == "record 3 is missing (next is 4)"


def test_an_answer_inserted_without_a_record_is_found(evidence, developers):
    answer = Answer.objects.create(memo=evidence, developer=developers["ru"], response="acknowledged", content_hash="x")
    assert evidence_verify(evidence).problem == f"answer {answer.pk} is not in the chain (added behind its back)"


@pytest.mark.parametrize(
    "column, value, changed",
    [
        ("country", "'KZ'", "country"),
        ("sent_at", "NULL", "sent_at"),
        ("provider_message_id", "'<other@x>'", "message_id"),
    ],
)
def test_a_delivery_edited_is_found_naming_its_record(evidence, column, value, changed):
    cn = Delivery.objects.get(country="CN")
    sql(f"UPDATE memos_delivery SET {column} = {value} WHERE id = %s", cn.pk)
    assert evidence_verify(evidence).problem == (
        f"record 2 (handover {cn.pk}): delivery {cn.pk} was altered after it was recorded ({changed})"
    )


def test_a_delivery_whose_status_was_edited_is_found(evidence):
    ru = Delivery.objects.get(country="RU")
    sql("UPDATE memos_delivery SET status = 'delivered' WHERE id = %s", ru.pk)
    assert evidence_verify(evidence).problem == (
        f"delivery {ru.pk}: its status is delivered, the chain's last word on it is bounced (altered after it was recorded)"
    )


def test_a_deleted_delivery_is_found(evidence):
    ru = Delivery.objects.get(country="RU")
    sql("UPDATE memos_deliveryevent SET delivery_id = NULL WHERE delivery_id = %s", ru.pk)
    sql("DELETE FROM memos_delivery WHERE id = %s", ru.pk)
    assert (
        evidence_verify(evidence).problem == f"record 3 (handover {ru.pk}): delivery {ru.pk} it proves no longer exists"
    )


def test_the_last_answer_deleted_with_its_record_is_found(evidence):
    last = record(evidence, 9)
    sql("DELETE FROM memos_evidencerecord WHERE id = %s", last.pk)
    sql("DELETE FROM memos_case WHERE answer_id = %s", last.object_id)  # the case it opened goes with it
    sql("DELETE FROM memos_answer WHERE id = %s", last.object_id)
    problem = evidence_verify(evidence).problem
    assert problem.startswith("record 9 is missing: the checkpoint signed at ")
    assert problem.endswith("covers 9 records, the chain holds 8")


def test_an_answer_rewritten_with_every_hash_after_it_recomputed_is_found(evidence):
    ack = Answer.objects.get(response="acknowledged")
    rewritten = record(evidence, 8)
    sql("UPDATE memos_answer SET ip_address = '192.0.2.66' WHERE id = %s", ack.pk)
    sql(
        "UPDATE memos_evidencerecord SET payload = %s WHERE id = %s",
        json.dumps({**rewritten.payload, "ip_address": "192.0.2.66"}),
        rewritten.pk,
    )
    rehash_from(evidence, 8)
    assert (
        evidence_verify(evidence).problem
        == f"record 8 (answer {ack.pk}): not written by memo-service (its tag does not hold)"
    )
    # An insider cannot make the tag; say they copied the record's original one back: the
    # tag no longer covers the payload, so the hashes they recomputed still tell.
    EvidenceRecord.objects.filter(pk=rewritten.pk).update(tag=rewritten.tag)
    problem = evidence_verify(evidence).problem
    assert problem == f"record 8 (answer {ack.pk}): not written by memo-service (its tag does not hold)"


def test_a_middle_record_dropped_and_the_rest_renumbered_is_found(evidence):
    dropped = record(evidence, 6)
    sql("DELETE FROM memos_evidencerecord WHERE id = %s", dropped.pk)
    sql("DELETE FROM memos_deliveryevent WHERE id = %s", dropped.object_id)
    for seq in range(7, 10):
        EvidenceRecord.objects.filter(memo=evidence, seq=seq).update(seq=seq - 1)
    rehash_from(evidence, 6)
    status = record(evidence, 6)
    problem = evidence_verify(evidence).problem
    assert problem.startswith(
        f"records 6–7, from record 6 (status {status.object_id}): the chain differs from the one signed at "
    )


def test_a_forged_or_removed_checkpoint_is_found(evidence):
    checkpoint = EvidenceCheckpoint.objects.get(memo=evidence, seq=5)
    EvidenceCheckpoint.objects.filter(pk=checkpoint.pk).update(head_hash="f" * 64)
    assert "checkpoint at record 5" in evidence_verify(evidence).problem
    assert "its signature does not verify with the evidence key" in evidence_verify(evidence).problem
    EvidenceCheckpoint.objects.filter(pk=checkpoint.pk).delete()
    assert "checkpoint at record 7" in evidence_verify(evidence).problem
    assert "does not follow the checkpoint before it (a checkpoint was removed)" in evidence_verify(evidence).problem


def test_a_rotated_signing_key_keeps_earlier_checkpoints_verifying(evidence, settings, client, developers, tmp_path):
    before = io.StringIO()
    call_command("evidence_key", "--new", stdout=before)
    old_id = checkpoints.key_id(public_key())
    assert f"fingerprint {old_id}" in before.getvalue()
    rotation = dict(line.split("=", 1) for line in before.getvalue().splitlines() if line.startswith("EVIDENCE_"))
    settings.EVIDENCE_SIGNING_KEY = rotation["EVIDENCE_SIGNING_KEY"]
    new_id = checkpoints.key_id(public_key())
    assert new_id != old_id
    # Rotated without retiring the old key: its checkpoints are not taken on trust.
    assert evidence_verify(evidence).problem == (
        f"checkpoint at record 3 ({EvidenceCheckpoint.objects.get(memo=evidence, seq=3).at.isoformat()}): "
        f"signed with key {old_id[:16]}, which is neither the evidence key nor a retired one this verification "
        "was given (EVIDENCE_RETIRED_KEYS)"
    )
    settings.EVIDENCE_RETIRED_KEYS = rotation["EVIDENCE_RETIRED_KEYS"].split(",")
    client.post(
        ack_url(evidence.pk, developers["ru"].pk).removeprefix("http://testserver"),
        {"interacted": "1", "response": "needs_help", "comment": "call me"},
        HTTP_USER_AGENT=PHONE,
    )
    assert f"10 records, chain intact, sealed by 6 signed checkpoints (keys {old_id[:16]}, {new_id[:16]})" in verify(
        evidence
    )
    assert EvidenceCheckpoint.objects.get(memo=evidence, seq=10).key_id == new_id
    path = export(evidence, tmp_path / "evidence.json")
    out = io.StringIO()
    call_command("verify_evidence", "--file", str(path), stdout=out)
    assert "10 records, chain intact, sealed by 6 signed checkpoints" in out.getvalue()
    assert f"public keys {old_id}, {new_id}" in out.getvalue()
    # A checkpoint cannot borrow a key it was not signed with.
    EvidenceCheckpoint.objects.filter(memo=evidence, seq=10).update(key_id=old_id)
    assert "its signature does not verify" in evidence_verify(evidence).problem


def test_an_export_verifies_with_no_database(evidence, tmp_path, django_assert_max_num_queries):
    path = export(evidence, tmp_path / "evidence.json")
    document = json.loads(path.read_text())
    assert len(document["chain"]) == 9 and len(document["checkpoints"]) == 5 and document["public_key"]
    out = io.StringIO()
    with django_assert_max_num_queries(0):
        call_command("verify_evidence", "--file", str(path), stdout=out)
    assert "verifies: 9 records, chain intact, sealed by 5 signed checkpoints" in out.getvalue()


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("public_key"),
        lambda d: d.update(public_keys="not a list of keys"),
        lambda d: d["chain"][4].pop("hash"),
        lambda d: d.update(checkpoints=[1, 2]),
    ],
)
def test_a_malformed_export_is_refused_with_the_reason(evidence, tmp_path, damage):
    path = export(evidence, tmp_path / "evidence.json")
    document = json.loads(path.read_text())
    document.pop("public_keys")
    damage(document)
    path.write_text(json.dumps(document))
    with pytest.raises(CommandError, match="not a well-formed evidence export"):
        call_command("verify_evidence", "--file", str(path), stdout=io.StringIO())


def test_an_export_is_verified_as_it_is_read_whatever_its_pieces(evidence, tmp_path, monkeypatch):
    from memo_service.memos.evidence import export_file

    path = export(evidence, tmp_path / "evidence.json")
    text = path.read_text()
    assert text.index('"checkpoints"') < text.index('"recipients"') < text.index('"chain"')
    monkeypatch.setattr(export_file, "CHUNK", 7)  # every value split across reads
    out = io.StringIO()
    call_command("verify_evidence", "--file", str(path), stdout=out)
    assert "verifies: 9 records, chain intact, sealed by 5 signed checkpoints" in out.getvalue()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "cannot read it as JSON: the file ends before the document does"),
        ('{"memo": "x", "chain": [{"seq": 1}', "cannot read it as JSON: the file ends before the document does"),
        ('{"memo": "x", "chain": [{"seq": 1}}', "cannot read it as JSON: expected ']' at character 34"),
        ('{"memo": x}', "cannot read it as JSON: not JSON at character 9"),
        ('{"memo": "x"} trailing', "cannot read it as JSON: more after the document's end"),
        ('["not", "an", "object"]', "cannot read it as JSON: expected '{'"),
        ('{"memo": "x"}', "not a well-formed evidence export"),
    ],
)
def test_a_file_that_is_not_an_export_is_refused_with_the_reason(tmp_path, text, reason):
    path = tmp_path / "evidence.json"
    path.write_text(text)
    with pytest.raises(CommandError, match=reason):
        call_command("verify_evidence", "--file", str(path), stdout=io.StringIO())


def test_an_export_edited_is_found_with_no_database(evidence, tmp_path):
    path = export(evidence, tmp_path / "evidence.json")
    document = json.loads(path.read_text())
    document["chain"][7]["payload"]["ip_address"] = "192.0.2.66"
    path.write_text(json.dumps(document))
    object_id = document["chain"][7]["object_id"]
    with pytest.raises(CommandError, match=f"record 8 \\(answer {object_id}\\): its hash does not match"):
        call_command("verify_evidence", "--file", str(path), stdout=io.StringIO())
    for entry in document["chain"][7:]:  # recomputed, it no longer matches the signed heads
        entry["prev_hash"] = document["chain"][entry["seq"] - 2]["hash"]
        entry["hash"] = record_hash(entry["prev_hash"], entry["kind"], entry["object_id"], entry["payload"])
    path.write_text(json.dumps(document))
    with pytest.raises(CommandError, match=f"record 8 \\(answer {object_id}\\): the chain differs from the one signed"):
        call_command("verify_evidence", "--file", str(path), stdout=io.StringIO())


def test_a_history_rewritten_and_sealed_again_is_found_against_an_earlier_export(
    evidence, tmp_path, client, developers
):
    kept = export(evidence, tmp_path / "kept.json")
    assert "still begins with the one in" in verify(evidence, "--against", str(kept))
    # Rewrite CN's answer, recompute every hash, delete every checkpoint, then let the
    # sequencer seal again over the forged history with the real key.
    ack = Answer.objects.get(response="acknowledged")
    rewritten = record(evidence, 8)
    sql("UPDATE memos_answer SET ip_address = '192.0.2.66' WHERE id = %s", ack.pk)
    sql(
        "UPDATE memos_evidencerecord SET payload = %s WHERE id = %s",
        json.dumps({**rewritten.payload, "ip_address": "192.0.2.66"}),
        rewritten.pk,
    )
    rehash_from(evidence, 2)
    EvidenceCheckpoint.objects.filter(memo=evidence).delete()
    client.post(
        ack_url(evidence.pk, developers["ru"].pk).removeprefix("http://testserver"),
        {"interacted": "1", "response": "needs_help", "comment": "call me"},
        HTTP_USER_AGENT=PHONE,
    )
    # The sequencer signs again only what it wrote: the rewritten answer's tag fails.
    with pytest.raises(CommandError, match=f"record 8 \\(answer {ack.pk}\\): not written by memo-service"):
        verify(evidence)
    # And against the export, the history differs from the one it kept.
    kept_chain = json.loads(kept.read_text())["chain"]
    assert evidence_verify_against(evidence, evidence.slug, kept_chain) == (
        f"record 8 (answer {ack.pk}): the database's record differs from the one the export recorded (history rewritten)"
    )


def test_the_last_answer_deleted_with_its_checkpoint_is_found_against_an_earlier_export(evidence, tmp_path, settings):
    """Without the published heads (test_evidence_insider.py has them), an earlier export
    is what tells."""
    kept = export(evidence, tmp_path / "kept.json")
    settings.EVIDENCE_HEADS_PATH = ""
    last = record(evidence, 9)
    sql("DELETE FROM memos_evidencecheckpoint WHERE memo_id = %s AND seq = 9", evidence.pk)
    sql("DELETE FROM memos_evidencerecord WHERE id = %s", last.pk)
    sql("DELETE FROM memos_case WHERE answer_id = %s", last.object_id)  # the case it opened goes with it
    sql("DELETE FROM memos_answer WHERE id = %s", last.object_id)
    with pytest.raises(
        CommandError, match=f"record 9 \\(answer {last.object_id}\\): in the export, gone from the database"
    ):
        verify(evidence, "--against", str(kept))


def test_a_sequencer_that_dies_mid_batch_leaves_the_chain_intact_and_the_next_continues(
    evidence, client, developers, monkeypatch
):
    client.post(
        ack_url(evidence.pk, developers["ru"].pk).removeprefix("http://testserver"),
        {"interacted": "1", "response": "needs_help", "comment": "call me"},
        HTTP_USER_AGENT=PHONE,
    )

    def die(*args):
        raise SystemExit("killed while signing")

    monkeypatch.setattr(checkpoints, "sign", die)  # after the batch's records were updated
    with pytest.raises(SystemExit):
        evidence_seal(memo_id=evidence.pk)
    assert EvidenceRecord.objects.filter(memo=evidence, seq__isnull=True).count() == 1
    assert "evidence verifies up to record 9" in verify(evidence, "--no-seal")
    monkeypatch.undo()
    assert evidence_seal(memo_id=evidence.pk) == 1
    assert "evidence verifies: 10 records, chain intact" in verify(evidence, "--no-seal")


def test_erasing_a_developer_keeps_the_evidence_verifying(evidence):
    call_command("erase_developer", "cn-1", stdout=io.StringIO())
    assert "evidence verifies: 9 records" in verify(evidence)


def test_the_csv_export_has_one_row_per_recipient_with_their_answer(evidence):
    out = io.StringIO()
    call_command("export_evidence", evidence.slug, "--format", "csv", stdout=out)
    rows = {r["developer"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert set(rows) == {"cn-1", "ru-1"}
    cn, ru = rows["cn-1"], rows["ru-1"]
    assert (cn["email"], cn["country_at_send"], cn["delivery_status"], cn["provider_message_id"]) == (
        "cn-1@example.com",
        "CN",
        "delivered",
        Delivery.objects.get(memo=evidence, country="CN").provider_message_id,
    )
    assert (cn["answer"], cn["content_hash"], cn["suspected_automation"], cn["user_agent"]) == (
        "acknowledged",
        evidence.content_hash,
        "no",
        PHONE,
    )
    assert (ru["delivery_status"], ru["answer"]) == ("bounced", "disputes_region")


def test_the_json_export_carries_every_delivery_and_answer(evidence):
    out = io.StringIO()
    call_command("export_evidence", str(evidence.pk), "--format", "json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["content_hash"] == evidence.content_hash
    ru = next(r for r in document["recipients"] if r["developer"] == "ru-1")
    assert ru["deliveries"][0]["status"] == "bounced"
    assert ru["answers"][0]["at"] and ru["answers"][0]["content_hash"] == evidence.content_hash
    assert (ru["answers"][0]["response"], ru["answers"][0]["country_claimed"], ru["answers"][0]["comment"]) == (
        "disputes_region",
        "KZ",
        "=cmd()",
    )


def test_the_admin_downloads_and_verifies_the_evidence(admin_client, evidence):
    csv_response = admin_client.get(reverse("admin:memos_memo_evidence", args=[evidence.pk, "csv"]))
    body = b"".join(csv_response.streaming_content).decode()
    assert "cn-1@example.com" in body
    page = admin_client.get(reverse("admin:memos_memo_verify", args=[evidence.pk]), follow=True).content.decode()
    assert "Evidence verifies: 9 records, chain intact" in page
    assert admin_client.get(reverse("admin:memos_memo_evidence", args=[evidence.pk, "xml"])).status_code == 404


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_sequencers_at_once_never_fork_the_chain(memo):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    status_records(memo, range(1, 301))

    def sequencer() -> int | None:
        try:
            return evidence_seal(memo_id=memo.pk, batch=25)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(2) as pool:
        chained = [f.result() for f in [pool.submit(sequencer), pool.submit(sequencer)]]
    assert sum(n or 0 for n in chained) == 300
    seqs = list(EvidenceRecord.objects.filter(memo=memo).order_by("id").values_list("seq", flat=True))
    assert seqs == list(range(1, 301))  # in the order they came, each once
    assert EvidenceCheckpoint.objects.filter(memo=memo).count() == 12
    assert "evidence verifies: 300 records, chain intact, sealed by 12 signed checkpoints" in verify(memo, "--no-seal")


def test_an_answer_starts_its_memos_sequencer_after_commit(
    evidence, client, developers, eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            ack_url(evidence.pk, developers["ru"].pk).removeprefix("http://testserver"),
            {"interacted": "1", "response": "needs_help", "comment": "call me"},
            HTTP_USER_AGENT=PHONE,
        )
    assert not EvidenceRecord.objects.filter(memo=evidence, seq__isnull=True).exists()
    assert record(evidence, 10).kind == "answer"


def test_a_flood_of_events_starts_one_sequencer_a_second_and_it_chains_them_all(
    evidence, client, monkeypatch, django_capture_on_commit_callbacks
):
    """Each process starts the memo's sequencer once per SEAL_DELAY_S, however many
    webhooks arrive; the sequencer, starting SEAL_DELAY_S later, takes every record that
    came in meanwhile, and the next event after the window starts the next one."""
    from memo_service.memos.evidence import append as evidence_module
    from memo_service.memos.tasks import evidence_seal as seal_task

    started, clock, asked = [], [1000.0], []
    monkeypatch.setattr(seal_task, "apply_async", lambda args, countdown: started.append((args[0], countdown)))
    add = cache.add

    def add_asked(key, *args, **kwargs):
        asked.append(key)
        return add(key, *args, **kwargs)

    monkeypatch.setattr(cache, "add", add_asked)
    monkeypatch.setattr(evidence_module.time, "monotonic", lambda: clock[0])
    cn = Delivery.objects.get(memo=evidence, developer__country="CN")
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(20):
            assert post(client, mailgun_event("opened", cn, message_id=cn.provider_message_id)).status_code == 200
    assert started == [(evidence.pk, evidence_module.SEAL_DELAY_S)]
    assert asked == [f"evidence-seal:{evidence.pk}"]  # the shared cache too, once, not per event
    assert EvidenceRecord.objects.filter(memo=evidence, seq__isnull=True).count() == 20
    evidence_seal(memo_id=evidence.pk)  # what the task started above does a second later
    assert not EvidenceRecord.objects.filter(memo=evidence, seq__isnull=True).exists()
    clock[0] += evidence_module.SEAL_DELAY_S
    cache.clear()  # the shared cache's key has expired too
    with django_capture_on_commit_callbacks(execute=True):
        post(client, mailgun_event("opened", cn, message_id=cn.provider_message_id))
    assert len(started) == 2
    evidence_seal(memo_id=evidence.pk)
    assert "evidence verifies: 30 records, chain intact" in verify(evidence, "--no-seal")


def test_beats_sweep_chains_what_no_sequencer_took(evidence, client, developers):
    from memo_service.memos.tasks import evidence_seal_due

    client.post(
        ack_url(evidence.pk, developers["ru"].pk).removeprefix("http://testserver"),
        {"interacted": "1", "response": "needs_help", "comment": "call me"},
        HTTP_USER_AGENT=PHONE,
    )
    evidence_seal_due()
    assert "evidence verifies: 10 records, chain intact, sealed by 6 signed checkpoints" in verify(
        evidence, "--no-seal"
    )


KILLED_SEQUENCER = """
import sys, time
import django
django.setup()
from memo_service.memos.evidence import checkpoints, sequencer
def sign_slowly(*args):  # the batch's records are written, the transaction still open
    open(sys.argv[2], "w").write("signing")
    time.sleep(120)

checkpoints.sign = sign_slowly
sequencer.evidence_seal(memo_id=int(sys.argv[1]))
"""


@pytest.mark.process
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_sequencer_process_killed_mid_batch_leaves_the_chain_intact_and_the_next_continues(memo, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from django.conf import settings

    from tests.conftest import database_url, wait_for

    def pending(n_from: int, n: int) -> None:
        status_records(memo, range(n_from, n_from + n))

    pending(1, 10)
    evidence_seal(memo_id=memo.pk)
    pending(11, 40)
    flag = tmp_path / "signing"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "VAR_DIR": str(settings.VAR_DIR),
        "DJANGO_SETTINGS_MODULE": "memo_service.settings",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_SEQUENCER, str(memo.pk), str(flag)], env=env, cwd=settings.BASE_DIR
    )
    try:
        wait_for(flag.exists, timeout=60, what="the sequencer to be mid-batch")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert EvidenceRecord.objects.filter(memo=memo, seq__isnull=True).count() == 40
    assert "evidence verifies up to record 10" in verify(memo, "--no-seal")
    assert evidence_seal(memo_id=memo.pk) == 40
    assert "evidence verifies: 50 records, chain intact, sealed by 2 signed checkpoints" in verify(memo, "--no-seal")


def test_a_delivery_sent_again_keeps_its_last_text_and_the_chain_verifies(evidence):
    """The idempotent backend sends a delivery whose outcome was unknown again: a second
    handover, and the row matches the last one."""
    cn = Delivery.objects.get(country="CN")
    hand_over([(cn.pk, "d" * 64)], "<cn-again@x>")
    evidence_seal(memo_id=evidence.pk)
    assert Delivery.objects.get(pk=cn.pk).text_hash == "d" * 64
    assert emails(record(evidence, 10))[0]["message_id"] == "<cn-again@x>"
    assert "evidence verifies: 10 records, chain intact" in verify(evidence, "--no-seal")
    sql("UPDATE memos_delivery SET country = 'KZ' WHERE id = %s", cn.pk)
    assert (
        evidence_verify(evidence).problem
        == f"record 10 (handover {cn.pk}): delivery {cn.pk} was altered after it was recorded (country)"
    )


def _from_another_connection(work):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    def run():
        try:
            return work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_what_is_sealed_while_verifying_or_exporting_is_pending_for_them_not_a_gap(memo, monkeypatch, tmp_path):
    """A million-recipient chain takes minutes to verify or export while the sequencer
    goes on chaining webhooks: both read as of the moment they began."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one connection write at a time: no sequencer runs beside a reader there")
    from memo_service.memos.evidence import export as evidence_export
    from memo_service.memos.evidence import verify as chain

    def pending(n_from: int, n: int) -> None:
        status_records(memo, range(n_from, n_from + n))

    pending(1, 100)
    evidence_seal(memo_id=memo.pk)
    pending(101, 200)
    records = chain.chained_pages

    def records_while_sealing(memo, fields):
        # After the checkpoints were read, the sequencer chains the 200.
        assert _from_another_connection(lambda: evidence_seal(memo_id=memo.pk)) == 200
        yield from records(memo, fields)

    monkeypatch.setattr(chain, "chained_pages", records_while_sealing)
    result = evidence_verify(memo)
    assert result.ok and (result.records, result.pending) == (100, 200), result.summary()
    monkeypatch.undo()

    exported_chain = evidence_export.evidence_chain

    def seal_then_chain(memo):
        # After the export read the checkpoints (300), 50 more come in and are sealed.
        def fifty_more_sealed():
            pending(301, 50)
            return evidence_seal(memo_id=memo.pk)

        assert _from_another_connection(fifty_more_sealed) == 50
        yield from exported_chain(memo)

    monkeypatch.setattr(evidence_export, "evidence_chain", seal_then_chain)
    path = export(memo, tmp_path / "evidence.json")
    out = io.StringIO()
    call_command("verify_evidence", "--file", str(path), stdout=out)
    assert "verifies: 300 records, chain intact" in out.getvalue()
    assert "350 records, chain intact" in verify(memo, "--no-seal")


# --- a handover record per provider call ------------------------------------------------


@pytest.fixture
def one_call(memo, developers):
    """CN, RU and US handed over in one provider call (one message id): one record."""
    add_region(memo, "US")
    deliveries = claimed(memo)
    hand_over([(d.pk, f"{n}" * 64) for n, d in enumerate(deliveries)], "<call-1@x>")
    evidence_seal(memo_id=memo.pk)
    return deliveries


def test_one_provider_call_is_one_chained_record_listing_each_email(memo, one_call):
    (handover,) = EvidenceRecord.objects.filter(memo=memo, kind="handover")
    assert (handover.seq, handover.kind, handover.object_id) == (2, "handover", one_call[0].pk)
    assert [entry["delivery"] for entry in emails(handover)] == [d.pk for d in one_call]
    assert [entry["text_hash"] for entry in emails(handover)] == ["0" * 64, "1" * 64, "2" * 64]
    assert {entry["message_id"] for entry in emails(handover)} == {"<call-1@x>"}
    assert "evidence verifies: 2 records, chain intact, sealed by 1 signed checkpoints" in verify(memo, "--no-seal")


def test_one_email_of_a_call_edited_or_deleted_is_found_naming_it(memo, one_call):
    first, middle, _ = one_call
    sql("UPDATE memos_delivery SET country = 'KZ' WHERE id = %s", middle.pk)
    assert evidence_verify(memo).problem == (
        f"record 2 (handover {first.pk}): delivery {middle.pk} was altered after it was recorded (country)"
    )
    sql("DELETE FROM memos_delivery WHERE id = %s", middle.pk)
    assert (
        evidence_verify(memo).problem
        == f"record 2 (handover {first.pk}): delivery {middle.pk} it proves no longer exists"
    )


def test_an_email_of_a_call_sent_again_verifies_by_its_last_handover(memo, one_call):
    """The second handover changed the row (a new message id): the first one no longer
    matches it, and need not; a change after the second is found, naming the second."""
    first, middle, last = one_call
    hand_over([(middle.pk, "d" * 64)], "<call-2@x>")
    evidence_seal(memo_id=memo.pk)
    assert record(memo, 3).object_id == middle.pk
    assert "evidence verifies: 3 records, chain intact" in verify(memo, "--no-seal")
    sql("UPDATE memos_delivery SET language = 'fr' WHERE id = %s", middle.pk)
    assert evidence_verify(memo).problem == (
        f"record 3 (handover {middle.pk}): delivery {middle.pk} was altered after it was recorded (language)"
    )
    # Deletion is never superseded: the first handover that names it says so.
    sql("DELETE FROM memos_delivery WHERE id = %s", middle.pk)
    assert (
        evidence_verify(memo).problem
        == f"record 2 (handover {first.pk}): delivery {middle.pk} it proves no longer exists"
    )


@pytest.mark.parametrize(
    "kind, payload",
    [("delivery", {}), ("handover", {"deliveries": [1, 2]}), ("handover", {"deliveries": [{"delivery": 1}]})],
)
def test_a_record_of_an_earlier_form_is_never_chained_nor_trusted(memo, one_call, kind, payload):
    """Per-email `delivery` records and handovers listing ids or objects were filled in
    from the rows by older sequencers: pending, they are refused; chained (as an older
    version left them), verification refuses the chain, naming the record."""
    forged = EvidenceRecord.objects.create(memo=memo, kind=kind, object_id=one_call[0].pk, payload=payload)
    assert evidence_seal(memo_id=memo.pk) == 0
    assert EvidenceRecord.objects.get(pk=forged.pk).refused
    assert evidence_verify(memo).problem == (
        f"pending record {forged.pk} ({kind} {one_call[0].pk}): not written by memo-service"
    )
    head = record(memo, 2)
    sql(
        "UPDATE memos_evidencerecord SET seq = 3, refused = false, prev_hash = %s, hash = %s WHERE id = %s",
        head.hash,
        record_hash(head.hash, kind, one_call[0].pk, payload),
        forged.pk,
    )
    assert evidence_verify(memo).problem == (
        f"record 3 ({kind} {one_call[0].pk}): written in an earlier form of the evidence that this version does not trust"
    )


def test_an_email_handed_over_but_not_yet_chained_is_pending_not_behind_the_chains_back(memo, developers):
    """What verification reads of the pending handovers: their emails are on their way
    into the chain, and a status change of theirs too."""
    from tests.conftest import make_developer

    make_developer("us-2", "US", name="Jane Smith")
    add_region(memo, "US")
    *first_call, late = claimed(memo)  # us-2, the last in the audience, waits for a second call
    hand_over([(d.pk, f"{n}" * 64) for n, d in enumerate(first_call)], "<call-1@x>")
    evidence_seal(memo_id=memo.pk)
    hand_over([(late.pk, "e" * 64)], "<call-2@x>")
    tracking_event(late, "delivered")  # its event and status change, pending too
    result = evidence_verify(memo)
    assert result.ok and (result.records, result.pending) == (2, 3), result.summary()


def test_a_sequencer_step_is_bounded_by_the_emails_it_chains_not_its_records(memo):
    """Three calls of 600 emails, a step of 1,000: the first step takes two (it stops
    once it holds 1,000), the second the third, each signed. Other records weigh one."""
    handover_records(memo, (1, 601, 1201), 600)
    assert evidence_seal(memo_id=memo.pk, batch=1000) == 3
    assert len(emails(record(memo, 3))) == 600
    status_records(memo, range(1, 1501))
    assert evidence_seal(memo_id=memo.pk, batch=1000) == 1500
    steps = list(EvidenceCheckpoint.objects.filter(memo=memo).order_by("seq").values_list("seq", flat=True))
    assert steps == [2, 3, 1003, 1503]


def test_a_sequencer_step_reads_the_payloads_it_chains_not_all_pending(memo, monkeypatch):
    """A hundred calls of a thousand emails pending: a step of 1,000 reads one payload."""
    handover_records(memo, range(1, 100_001, 1000), 1000)
    from memo_service.memos.evidence.sequencer import _seal_step

    payload = EvidenceRecord._meta.get_field("payload")
    read = []
    decode = payload.from_db_value

    def counted_decode(value, *args):
        read.append(1)
        return decode(value, *args)

    monkeypatch.setattr(payload, "from_db_value", counted_decode)
    assert _seal_step(memo.pk, 1000) == (1, True)
    assert len(read) == 1


@pytest.mark.parametrize("microsecond", [0, 123456])
def test_a_handover_records_each_email_as_its_row_was_when_handed_over(memo, developers, microsecond):
    """What the send writes (built by the database on PostgreSQL) is what verification
    computes from the row, to the microsecond; an edit before the sequencer chains it
    is an edit all the same."""
    from memo_service.memos.evidence.payloads import DELIVERY_FIELDS, delivery_payload

    sent_at = timezone.now().replace(microsecond=microsecond)
    delivery, _ = claimed(memo)
    evidence_seal(memo_id=memo.pk)  # the approval, chained as record 1
    hand_over([(delivery.pk, "f" * 64)], "<m@x>", accepted_at=sent_at)
    (pending,) = EvidenceRecord.objects.filter(memo=memo, seq__isnull=True)
    row = Delivery.objects.filter(pk=delivery.pk).values(*DELIVERY_FIELDS).get()
    assert emails(pending) == [delivery_payload(row)]
    assert emails(pending)[0]["sent_at"] == sent_at.isoformat()
    sql("UPDATE memos_delivery SET country = 'KZ' WHERE id = %s", delivery.pk)
    evidence_seal(memo_id=memo.pk)
    assert evidence_verify(memo).problem == (
        f"record 2 (handover {delivery.pk}): delivery {delivery.pk} was altered after it was recorded (country)"
    )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_sequencer_task_does_not_wait_for_another_and_starts_again_later(memo, monkeypatch):
    """A sequencer waiting on the memo's lock would hold a worker process that could be
    sending: the task gives way at once and asks for a start a second later."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one connection write at a time: the sequencer's lock is the database's")
    from django.db import transaction

    from memo_service.lib.db import row_lock
    from memo_service.memos.evidence import append as evidence_module
    from memo_service.memos.tasks import evidence_seal as seal_task

    cache.clear()
    started = []
    monkeypatch.setattr(seal_task, "apply_async", lambda args, countdown: started.append((args[0], countdown)))
    status_records(memo, [1])

    def task_that_would_fail_waiting():
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")  # a task that waited would fail here, not hang the test
        seal_task(memo.pk)

    with transaction.atomic():
        row_lock(Memo.objects.filter(pk=memo.pk))  # another sequencer, mid-step
        _from_another_connection(task_that_would_fail_waiting)
        assert started == [(memo.pk, evidence_module.SEAL_DELAY_S)]
    assert EvidenceRecord.objects.filter(memo=memo, seq__isnull=True).count() == 1
    _from_another_connection(lambda: seal_task(memo.pk))  # the start it asked for
    assert not EvidenceRecord.objects.filter(memo=memo, seq__isnull=True).exists()
    assert len(started) == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_sequencer_running_while_a_handover_is_written_never_sees_it_untagged(memo, developers, monkeypatch):
    """On PostgreSQL the database builds a handover's lines and the worker tags it after:
    a sequencer in between must not find the record (nor refuse it as not written by
    memo-service): both statements are one transaction."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one connection write at a time: no sequencer runs beside a writer there")
    from memo_service.memos.evidence import append

    delivery, _ = claimed(memo)
    tag = append.record_tag

    def tag_while_a_sequencer_runs(**kwargs):
        _from_another_connection(lambda: evidence_seal(memo_id=memo.pk))
        return tag(**kwargs)

    monkeypatch.setattr(append, "record_tag", tag_while_a_sequencer_runs)
    hand_over([(delivery.pk, "a" * 64)], "<cn@x>")
    monkeypatch.undo()
    assert not EvidenceRecord.objects.filter(memo=memo, refused=True).exists()
    evidence_seal(memo_id=memo.pk)
    assert evidence_verify(memo).ok
