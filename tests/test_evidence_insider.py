"""The insider: someone who can write the database (raw SQL, as they would) but cannot
read the environment's secrets. Each attack that once verified is caught and named.

The memo is the `evidence` fixture's: approved (record 1), handed over to CN and RU
(2-3), CN delivered (4-5), RU bounced (6-7), CN acknowledged (8), RU disputed (9); every
checkpoint also published to the heads file (EVIDENCE_HEADS_PATH, a test's own)."""

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as conf
from django.core.management import CommandError, call_command
from django.urls import reverse

from memo_service.memos.answer.sent_text import _sent_renderer
from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.evidence.sequencer import evidence_seal
from memo_service.memos.evidence.verify import evidence_verify
from memo_service.memos.models import Answer, Delivery, EvidenceRecord
from tests.test_evidence import PHONE, evidence, export, record, sql, verify  # noqa: F401  (evidence: a fixture)
from tests.test_evidence_export import after_send, staff, withdrawn  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def columns(model, leave_out=("id",)):
    return [f.column for f in model._meta.concrete_fields if f.column not in leave_out]


def copy_row(model, row_id, **replace):
    """INSERT … SELECT of a row with some columns replaced: what an insider does to forge
    one that looks like its neighbours. Returns the new row's id."""
    cols = columns(model)
    chosen = [("%s" if c in replace else c) for c in cols]
    table = model._meta.db_table
    sql(
        f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(chosen)} FROM {table} WHERE id = %s",
        *[replace[c] for c in cols if c in replace],
        row_id,
    )
    return model.objects.order_by("-id").values_list("id", flat=True).first()


def heads_file():
    return Path(conf.EVIDENCE_HEADS_PATH)


def test_the_untouched_evidence_verifies_against_its_published_heads(evidence):
    lines = heads_file().read_text().splitlines()
    assert len(lines) == 5 and {json.loads(line)["memo"] for line in lines} == {evidence.pk}
    assert "evidence verifies: 9 records, chain intact, sealed by 5 signed checkpoints" in verify(evidence)
    assert "holding all 5 published heads" in verify(evidence)
    assert stat.S_IMODE(heads_file().stat().st_mode) == 0o600  # another local user reads nothing


def test_a_forged_acknowledgement_copied_from_a_real_one_is_never_chained_and_is_named(evidence, developers):
    genuine = record(evidence, 8)
    forged_answer = copy_row(Answer, genuine.object_id, developer_id=developers["us"].pk)
    forged = copy_row(EvidenceRecord, genuine.pk, object_id=forged_answer, seq=None, prev_hash="", hash="")
    with pytest.raises(
        CommandError, match=f"pending record {forged} \\(answer {forged_answer}\\): not written by memo"
    ):
        verify(evidence)
    assert EvidenceRecord.objects.get(pk=forged).refused  # the sequencer would not sign it
    assert EvidenceRecord.objects.get(pk=forged).seq is None
    # And no evidence file of it is made for an auditor to trust.
    with pytest.raises(CommandError, match="not exported: evidence does NOT verify: pending record"):
        call_command("export_evidence", evidence.slug, "--format", "json", stdout=io.StringIO())


def test_a_record_replayed_for_its_own_answer_is_named(evidence):
    genuine = record(evidence, 8)
    copy_row(EvidenceRecord, genuine.pk, seq=None, prev_hash="", hash="")
    with pytest.raises(
        CommandError,
        match=f"record 10 \\(answer {genuine.object_id}\\): the answer is recorded twice \\(a record replayed\\)",
    ):
        verify(evidence)


def test_a_delivery_rewritten_with_records_of_the_old_kinds_is_named(evidence):
    ru = Delivery.objects.get(country="RU")
    sql("UPDATE memos_delivery SET country = 'KZ', status = 'delivered' WHERE id = %s", ru.pk)
    for kind, payload in [("delivery", {}), ("status", {"delivery": ru.pk, "status": "delivered"})]:
        sql(
            "INSERT INTO memos_evidencerecord (memo_id, kind, object_id, payload, size, prev_hash, hash, created_at, "
            "tag, refused) VALUES (%s, %s, %s, %s, 1, '', '', %s, '', false)",
            evidence.pk,
            kind,
            ru.pk,
            json.dumps(payload),
            record(evidence, 1).created_at,
        )
    result = evidence_verify(evidence)
    assert (
        result.problem == f"record 3 (handover {ru.pk}): delivery {ru.pk} was altered after it was recorded (country)"
    )
    evidence_seal(memo_id=evidence.pk)
    assert EvidenceRecord.objects.filter(memo=evidence, refused=True).count() == 2  # never filled in from the row


def test_why_a_developer_was_told_rewritten_in_the_database_is_named(evidence):
    cn = Delivery.objects.get(country="CN")
    assert cn.reason  # the handover carries it: the chain proves why they were told
    sql("UPDATE memos_delivery SET reason = 'asked to be told' WHERE id = %s", cn.pk)
    assert (
        evidence_verify(evidence).problem
        == f"record 2 (handover {cn.pk}): delivery {cn.pk} was altered after it was recorded (reason)"
    )


def test_a_handover_written_before_it_listed_the_reason_still_verifies(evidence):
    from memo_service.memos.evidence.tags import record_tag

    handover = EvidenceRecord.objects.filter(memo=evidence, kind="handover").earliest("id")
    lines = [json.loads(line)[:-1] for line in handover.payload["lines"].split("\n")]  # as written before
    payload = {"fields": handover.payload["fields"][:-1], "lines": "\n".join(json.dumps(x) for x in lines)}
    assert "reason" not in payload["fields"]
    EvidenceRecord.objects.filter(memo=evidence).update(seq=None, prev_hash="", hash="")
    EvidenceRecord.objects.filter(pk=handover.pk).update(
        payload=payload,
        tag=record_tag(
            memo_id=evidence.pk,
            kind="handover",
            object_id=handover.object_id,
            payload=payload,
            created_at=handover.created_at,
        ),
    )
    from memo_service.memos.models import EvidenceCheckpoint

    EvidenceCheckpoint.objects.filter(memo=evidence).delete()
    evidence_seal(memo_id=evidence.pk)
    result = evidence_verify(evidence)
    assert result.ok, result.problem


def test_the_tail_cut_off_fails_against_the_published_heads(evidence, settings):
    last = record(evidence, 9)
    sql("DELETE FROM memos_evidencecheckpoint WHERE memo_id = %s AND seq = 9", evidence.pk)
    sql("DELETE FROM memos_evidencerecord WHERE id = %s", last.pk)
    sql("DELETE FROM memos_case WHERE answer_id = %s", last.object_id)  # the case it opened goes with it
    sql("DELETE FROM memos_answer WHERE id = %s", last.object_id)
    with pytest.raises(CommandError, match="the chain holds 8 records, but a head was published at .* over 9 "):
        verify(evidence)
    # Without the heads, the database alone looks whole: verify says what it could not check.
    settings.EVIDENCE_HEADS_PATH = ""
    out = verify(evidence)
    assert "8 records, chain intact" in out and "no published heads to check against" in out


def test_history_resealed_fails_naming_the_rewritten_answer_and_the_head(evidence, developers):
    ack = Answer.objects.get(response="acknowledged")
    sql("DELETE FROM memos_evidencecheckpoint WHERE memo_id = %s", evidence.pk)
    sql("UPDATE memos_evidencerecord SET seq = NULL, prev_hash = '', hash = '' WHERE memo_id = %s", evidence.pk)
    sql("UPDATE memos_answer SET response = 'needs_help', comment = 'call me' WHERE id = %s", ack.pk)
    payload = {**record_payload(ack.pk), "response": "needs_help", "comment": "call me"}
    sql(
        "UPDATE memos_evidencerecord SET payload = %s WHERE kind = 'answer' AND object_id = %s",
        json.dumps(payload),
        ack.pk,
    )
    with pytest.raises(CommandError, match=f"\\(answer {ack.pk}\\): not written by memo-service"):
        verify(evidence)


def test_history_resealed_from_genuine_records_fails_against_the_published_heads(evidence):
    """Re-chained in another order (the RU dispute before the CN acknowledgement) with
    every record genuine: the database alone is consistent, the heads are not."""
    sql("DELETE FROM memos_evidencecheckpoint WHERE memo_id = %s", evidence.pk)
    sql("UPDATE memos_evidencerecord SET seq = NULL, prev_hash = '', hash = '' WHERE memo_id = %s", evidence.pk)
    cn_answer, ru_answer = record_ids(evidence, "answer")
    sql("UPDATE memos_evidencerecord SET id = -1 WHERE id = %s", cn_answer)  # first in the queue now
    evidence_seal(memo_id=evidence.pk)
    with pytest.raises(CommandError, match="record 3: the chain differs from the head published at "):
        call_command("verify_evidence", evidence.slug, "--heads", str(heads_file()), stdout=io.StringIO())


def record_payload(answer_id):
    return EvidenceRecord.objects.get(kind="answer", object_id=answer_id).payload


def record_ids(memo, kind):
    return list(EvidenceRecord.objects.filter(memo=memo, kind=kind).order_by("id").values_list("id", flat=True))


def test_the_text_swapped_in_the_database_is_never_shown_answered_or_verified(evidence, client, developers):
    sql(
        "UPDATE memos_memo SET subject = %s, text_body = %s, html_body = %s WHERE id = %s",
        "Nothing changes",
        "Ignore the earlier memo.",
        "<p>Ignore the earlier memo.</p>",
        evidence.pk,
    )
    for translation in ("subject", "text_body"):
        sql(f"UPDATE memos_memotranslation SET {translation} = 'x' WHERE memo_id = %s", evidence.pk)
    ru = developers["ru"]  # disputed their region, not yet acknowledged
    client.get(ack_url(evidence.pk, ru.pk).removeprefix("http://testserver"))
    page = reverse("ack-page", args=[evidence.pk])
    # A process that had the memo loaded keeps showing the approved text...
    assert "Ignore the earlier memo" not in client.get(page).content.decode()
    # ...and one that loads it now refuses it.
    _sent_renderer.cache_clear()
    response = client.get(page)
    assert response.status_code == 503 and "Ignore the earlier memo" not in response.content.decode()
    posted = client.post(page, {"interacted": "1", "response": "acknowledged"}, HTTP_USER_AGENT=PHONE)
    assert posted.status_code == 503
    assert not Answer.objects.filter(developer=ru, response="acknowledged").exists()
    with pytest.raises(
        CommandError,
        match="record 1 \\(approval .*\\): the memo's html_body \\(en\\), subject \\(en\\), text_body \\(en\\), "
        "subject \\(zh-hans\\), text_body \\(zh-hans\\) differ from the text approved",
    ):
        verify(evidence)


def test_the_approval_record_rewritten_to_match_is_not_written_by_memo_service(evidence, client, developers):
    approval = record(evidence, 1)
    content = approval.payload["content"]
    content["languages"]["en"]["subject"] = "Nothing changes"
    sql("UPDATE memos_memo SET subject = 'Nothing changes' WHERE id = %s", evidence.pk)
    sql(
        "UPDATE memos_evidencerecord SET payload = %s WHERE id = %s",
        json.dumps({**approval.payload, "content": content}),
        approval.pk,
    )
    client.get(ack_url(evidence.pk, developers["ru"].pk).removeprefix("http://testserver"))
    _sent_renderer.cache_clear()  # a process that loads the memo now
    assert client.get(reverse("ack-page", args=[evidence.pk])).status_code == 503
    with pytest.raises(CommandError, match="record 1 .*its hash does not match its content"):
        verify(evidence)


def test_an_erased_memo_fails_with_or_without_its_heads(evidence, settings):
    for table in ("memos_evidencerecord", "memos_evidencecheckpoint", "memos_case", "memos_answer"):
        sql(f"DELETE FROM {table} WHERE memo_id = %s", evidence.pk)
    sql(
        "DELETE FROM memos_deliveryevent WHERE delivery_id IN (SELECT id FROM memos_delivery WHERE memo_id = %s)",
        evidence.pk,
    )
    sql("DELETE FROM memos_delivery WHERE memo_id = %s", evidence.pk)
    with pytest.raises(CommandError, match="the chain holds 0 records, but a head was published at .* over 9 "):
        verify(evidence)
    settings.EVIDENCE_HEADS_PATH = ""
    with pytest.raises(CommandError, match="memo regions-blocked is sent but its chain holds no approval record"):
        verify(evidence)


@pytest.mark.process
def test_an_auditor_verifies_an_export_and_its_heads_with_no_settings(evidence, tmp_path):
    path = export(evidence, tmp_path / "evidence.json")
    heads = tmp_path / "heads.jsonl"
    heads.write_text(heads_file().read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "SECRET", "EVIDENCE", "DATABASE"))}

    def auditor(*args):
        return subprocess.run(
            [sys.executable, "-m", "memo_service.memos.evidence.verify_file", *args],
            env=env,
            cwd=conf.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = auditor(str(path), "--heads", str(heads))
    assert done.returncode == 0, done.stderr
    assert "9 records, chain intact, sealed by 5 signed checkpoints, holding all 5 heads published" in done.stdout
    # An export cut short (its last record and checkpoint gone) fails against the heads.
    document = json.loads(path.read_text())
    document["chain"].pop()
    document["checkpoints"].pop()
    path.write_text(json.dumps(document))
    done = auditor(str(path), "--heads", str(heads))
    assert done.returncode == 1 and "the chain holds 8 records, but a head was published" in done.stderr
    assert auditor(str(tmp_path / "missing.json")).returncode == 2


def test_a_checkpoint_head_in_the_file_that_is_not_signed_is_named(evidence):
    lines = heads_file().read_text().splitlines()
    head = json.loads(lines[-1])
    heads_file().write_text("\n".join([*lines[:-1], json.dumps({**head, "head": "f" * 64})]) + "\n")
    with pytest.raises(CommandError, match="the head published at .* over 9 records: its signature does not verify"):
        verify(evidence)
    heads_file().write_text("not json\n")
    with pytest.raises(CommandError, match="line 1: not a published head"):
        verify(evidence)


# After the send: the memo of tests/test_evidence_export.py's `after_send` (an approval,
# a decided dispute, a help case replied to, an objection), edited by the insider in
# the database. Each edit is named; none needs the export.


def _dispute_case(memo):
    from memo_service.memos.models import Case

    return Case.objects.get(memo=memo, developer__external_id="ru-1")


def test_a_cases_rationale_rewritten_in_the_database_is_named(after_send):
    case = _dispute_case(after_send)
    sql("UPDATE memos_case SET rationale = 'Nobody asked.' WHERE id = %s", case.pk)
    assert (
        f"case {case.pk}'s rationale differs from it (altered after it was recorded)"
        in evidence_verify(after_send).problem
    )


def test_a_disputes_outcome_rewritten_in_the_database_is_named(after_send):
    case = _dispute_case(after_send)
    sql("UPDATE memos_disputeresolution SET outcome = 'confirmed' WHERE answer_id = %s", case.answer_id)
    problem = evidence_verify(after_send).problem
    assert f"the decision on case {case.pk}'s dispute has another outcome (altered after it was recorded)" in problem


def test_a_corrected_country_rewritten_in_the_database_is_named(after_send):
    case = _dispute_case(after_send)
    sql("UPDATE memos_disputeresolution SET new_country = 'US' WHERE answer_id = %s", case.answer_id)
    problem = evidence_verify(after_send).problem
    assert f"case {case.pk}'s decision was altered after it was recorded (new_country)" in problem


def test_a_reply_rewritten_in_the_database_is_named(after_send):
    from memo_service.memos.models import CaseEntry

    reply = CaseEntry.objects.get(case__memo=after_send, kind="reply")
    sql("UPDATE memos_caseentry SET text = 'We will call you.' WHERE id = %s", reply.pk)
    assert (
        f"case {reply.case_id}'s reply was altered after it was recorded (text)" in evidence_verify(after_send).problem
    )


def test_a_reply_added_behind_the_chains_back_is_named(after_send):
    from memo_service.memos.models import CaseEntry

    reply = CaseEntry.objects.get(case__memo=after_send, kind="reply")
    forged = copy_row(CaseEntry, reply.pk, notification_id=None, text="Ignore the memo.")
    assert evidence_verify(after_send).problem == (
        f"case {reply.case_id}'s reply {forged} is not in the chain (added behind its back)"
    )


def test_an_answers_statement_hash_rewritten_in_the_database_is_named(after_send):
    answer = Answer.objects.get(memo=after_send, developer__external_id="cn-1")
    sql("UPDATE memos_answer SET statement_hash = %s WHERE id = %s", "0" * 64, answer.pk)
    assert "the answer was altered after it was recorded (statement_hash)" in evidence_verify(after_send).problem


def test_another_approver_written_into_the_memo_is_named(after_send):
    sql("UPDATE memos_memo SET approver_id = author_id WHERE id = %s", after_send.pk)
    after_send.refresh_from_db()
    assert "the memo's approver differs from it (altered after approval)" in evidence_verify(after_send).problem


def test_a_withdrawal_reason_rewritten_in_the_database_is_named(after_send, staff):
    memo = withdrawn(after_send, staff)
    assert evidence_verify(memo).ok
    sql("UPDATE memos_memo SET withdrawal_reason = 'Sent in error.' WHERE id = %s", memo.pk)
    memo.refresh_from_db()
    assert "the memo's reason differs from it (altered after it)" in evidence_verify(memo).problem


# Decided behind the chain's back: a case or dispute marked decided, a decision undone,
# a withdrawal undone, by SQL. Each is named.


def _case_of(memo, developer):
    from memo_service.memos.models import Case

    return Case.objects.get(memo=memo, developer__external_id=developer)


def test_a_help_case_marked_resolved_in_the_database_is_named(after_send):
    case = _case_of(after_send, "cn-2")
    sql("UPDATE memos_case SET status = 'resolved', outcome = 'answered', rationale = 'Done.' WHERE id = %s", case.pk)
    assert evidence_verify(after_send).problem == (
        f"case {case.pk} says it was decided (answered) and no record of the chain decides it"
    )


def _dispute_decided_by_sql(case, outcome="exempted", note="A proxy.", at="2020-01-01 00:00:00+00:00"):
    sql(
        "INSERT INTO memos_disputeresolution (answer_id, outcome, new_country, previous_country, exempt, note, "
        "resolved_by_id, resolved_at) VALUES (%s, %s, '', '', true, %s, NULL, %s)",
        case.answer_id,
        outcome,
        note,
        at,
    )


def test_an_exemption_inserted_on_an_undecided_dispute_is_named(after_send):
    case = _case_of(after_send, "cn-4")  # disputed, not decided: an exemption would stop their reminders
    _dispute_decided_by_sql(case)
    assert evidence_verify(after_send).problem == (
        f"the decision (exempted) on answer {case.answer_id}'s dispute is in no record of the chain "
        "(added behind its back)"
    )


def test_a_dispute_forged_to_look_decided_before_cases_were_kept_is_named(after_send):
    """Migration 0023's rule for the disputes decided before cases were kept, used by an
    insider on a dispute answered since: the resolution backdated, the case made to match."""
    case = _case_of(after_send, "cn-4")
    _dispute_decided_by_sql(case)
    sql(
        "UPDATE memos_case SET status = 'resolved', outcome = 'exempted', rationale = 'A proxy.' WHERE id = %s",
        case.pk,
    )
    assert evidence_verify(after_send).problem == (
        f"case {case.pk} says it was decided (exempted) and no record of the chain decides it"
    )


def test_a_dispute_decided_before_cases_were_kept_still_verifies(evidence):
    """As migration 0023 left it: the case resolved with the decision, and no record of
    either (the chain held no case record then)."""
    from memo_service.memos.models import Case

    disputed = Answer.objects.get(memo=evidence, response="disputes_region")
    case, _ = Case.objects.get_or_create(
        answer=disputed, memo=evidence, defaults={"developer_id": disputed.developer_id, "kind": "dispute"}
    )
    _dispute_decided_by_sql(case, outcome="confirmed", note="As recorded.", at=record(evidence, 9).created_at)
    sql(
        "UPDATE memos_case SET status = 'resolved', outcome = 'confirmed', rationale = 'As recorded.' WHERE id = %s",
        case.pk,
    )
    assert evidence_verify(evidence).ok


def test_a_decided_case_reopened_in_the_database_is_named(after_send):
    case = _case_of(after_send, "ru-1")
    sql("UPDATE memos_case SET status = 'open', outcome = '' WHERE id = %s", case.pk)
    assert f"case {case.pk}'s outcome differs from it (altered after it was recorded)" in (
        evidence_verify(after_send).problem
    )


def test_a_withdrawn_memo_made_sent_again_in_the_database_is_named(after_send, staff):
    memo = withdrawn(after_send, staff)
    sql("UPDATE memos_memo SET status = 'sent' WHERE id = %s", memo.pk)
    memo.refresh_from_db()
    assert "the memo is sent, and this record withdrew it (altered after it)" in evidence_verify(memo).problem


# The emails outside the send: a text edited in its row is named, its hash recomputed or not.


def _rehashed_text(notification_id, text):
    from memo_service.memos.models import Notification
    from memo_service.memos.notify.notifications import notification_hash

    subject = Notification.objects.get(pk=notification_id).subject
    sql(
        "UPDATE memos_notification SET text = %s, text_hash = %s WHERE id = %s",
        text,
        notification_hash(subject, text),
        notification_id,
    )


def test_a_replys_email_edited_in_the_database_is_named(after_send):
    from memo_service.memos.models import CaseEntry

    reply = CaseEntry.objects.get(case__memo=after_send, kind="reply")
    sql("UPDATE memos_notification SET text = 'Ignore the memo.' WHERE id = %s", reply.notification_id)
    assert evidence_verify(after_send).problem == (
        f"notification {reply.notification_id} (case_reply): its subject or text was altered after it was made "
        "(its hash no longer matches)"
    )


def test_a_withdrawal_notice_rewritten_with_its_hash_is_named(
    after_send, staff, eager, django_capture_on_commit_callbacks
):
    from memo_service.memos.models import Notification

    with django_capture_on_commit_callbacks(execute=True):  # the notices, if they are made after commit
        memo = withdrawn(after_send, staff)
    assert evidence_verify(memo).ok
    notice = Notification.objects.filter(memo=memo, kind="withdrawal").earliest("pk")
    _rehashed_text(notice.pk, "Nothing was withdrawn; carry on.")
    assert evidence_verify(memo).problem == (
        f"notification {notice.pk} (withdrawal): the withdrawal record names no such notice in {notice.language}"
    )


def test_a_receipt_rewritten_with_its_hash_is_named(after_send):
    from memo_service.developers.models import Developer
    from memo_service.memos.models import Memo, Notification
    from tests.conftest import answered

    Memo.objects.filter(pk=after_send.pk).update(email_receipt=True)
    memo = Memo.objects.get(pk=after_send.pk)
    cn3 = Developer.objects.get(external_id="cn-3")
    answered(memo, cn3, "acknowledged", page_language=cn3.language)
    evidence_seal(memo_id=memo.pk)
    assert evidence_verify(memo).ok
    receipt = Notification.objects.get(memo=memo, kind="receipt")
    sql("UPDATE memos_notification SET subject = 'Nothing' WHERE id = %s", receipt.pk)
    assert "(receipt): its subject or text was altered after it was made" in evidence_verify(memo).problem
    _rehashed_text(receipt.pk, "You objected.")
    assert f"(notice {receipt.pk}): notification {receipt.pk} (receipt)'s text_hash differs from it" in (
        evidence_verify(memo).problem
    )
