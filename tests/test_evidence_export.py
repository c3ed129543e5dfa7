"""The evidence export is self-contained: an auditor holding only the JSON file sees who
approved what (and the hashes of every version approved), every case with its replies
and decisions, the withdrawal, the corrections, and where each recipient stands; and
`verify_evidence --file` catches any of it edited in the file.

The memo (the `after_send` fixture) went to seven developers an hour ago: cn-1
acknowledged; ru-1 disputed their region and an admin corrected it to KZ (outside the
audience: exempted); cn-2 asked for help and was replied to; ru-2 objected; cn-3 said
nothing; ru-3's email failed; cn-4 disputed their region, not decided yet. Cases and
the withdrawal go through their writes (memos/cases/, withdrawal.py), the answers
through the page's (answer_record, with the statement and page hashes it showed).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core import mail
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos.cases.cases import case_assign, case_decide_dispute, case_note, case_reply
from memo_service.memos.correction import cases_carry_over, memo_correction_create
from memo_service.memos.evidence import export_claims, export_sections
from memo_service.memos.evidence.export import Standing
from memo_service.memos.evidence.sequencer import evidence_seal
from memo_service.memos.models import DELIVERY_HANDED_OVER, Answer, Case, EvidenceRecord, Memo
from memo_service.memos.withdrawal import memo_withdraw
from tests.conftest import answered, approve, make_developer, make_memo, sent_memo

pytestmark = pytest.mark.django_db
Kind = EvidenceRecord.Kind
RATIONALE = "Our records show Kazakhstan."


def _answer(memo: Memo, developer: Developer, response: str, **fields: Any) -> Answer:
    """The developer's answer as their page records it (with the statement and page it
    showed, and the case it opens)."""
    return answered(memo, developer, response, page_language=developer.language, **fields)


def _case(answer: Answer) -> Case:
    return Case.objects.get(answer=answer, memo=answer.memo)


@pytest.fixture
def staff(db: None) -> Any:
    user = get_user_model().objects.create_user("case-handler", "handler@example.com", "pw-handler-1", is_staff=True)
    user.groups.add(Group.objects.get(name="Composer"))  # who handles cases
    return user


@pytest.fixture
def after_send(developers: dict[str, Developer], staff: Any) -> Memo:
    people = {
        **developers,
        "cn-2": make_developer("cn-2", "CN"),
        "ru-2": make_developer("ru-2", "RU"),
        "cn-3": make_developer("cn-3", "CN"),
        "ru-3": make_developer("ru-3", "RU"),
        "cn-4": make_developer("cn-4", "CN"),
    }
    memo = sent_memo(
        approve(make_memo()),
        {people["ru-3"]: "failed"},
        reasons={people["ru-3"]: "the provider refused it"},
        at=timezone.now() - timedelta(hours=1),
    )
    _answer(memo, people["cn"], Answer.Response.ACKNOWLEDGED)
    disputed = _answer(memo, people["ru"], Answer.Response.DISPUTES_REGION, country="KZ")
    case_decide_dispute(case=_case(disputed), by=staff, outcome="corrected", rationale=RATIONALE)
    help_case = _case(_answer(memo, people["cn-2"], Answer.Response.NEEDS_HELP, comment="Which API?"))
    case_assign(case=help_case, by=staff, assignee=staff)
    case_note(case=help_case, by=staff, text="Internal: check their keys first.")
    case_reply(case=help_case, by=staff, text="The v2 API only.")
    _answer(memo, people["ru-2"], Answer.Response.OBJECTS, comment="We were never told.")
    _answer(memo, people["cn-4"], Answer.Response.DISPUTES_REGION, country="US")
    evidence_seal(memo_id=memo.pk)
    return memo


def withdrawn(memo: Memo, by: Any) -> Memo:
    memo_withdraw(memo=memo, by=by, reason="The date was wrong.")
    evidence_seal(memo_id=memo.pk)
    memo.refresh_from_db()
    return memo


def exported(memo: Memo, path: Path | None = None) -> dict[str, Any]:
    out = io.StringIO()
    call_command("export_evidence", memo.slug, "--format", "json", stdout=out)
    if path is not None:
        path.write_text(out.getvalue())
    return json.loads(out.getvalue())


def verify_file(path: Path) -> str:
    out = io.StringIO()
    call_command("verify_evidence", "--file", str(path), stdout=out)
    return out.getvalue()


def tampered(path: Path, document: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> Path:
    copy = json.loads(json.dumps(document))
    change(copy)
    edited = path.with_name("edited.json")
    edited.write_text(json.dumps(copy, ensure_ascii=False))
    return edited


def case_of(document: dict[str, Any], developer: str) -> dict[str, Any]:
    return next(c for c in document["cases"] if c["developer"] == developer)


def test_it_names_who_approved_what_with_the_hashes_of_every_version_approved(after_send, tmp_path):
    document = exported(after_send)
    approval = document["approval"]
    assert approval["author"]["username"] == "composer" and approval["requested_by"]["username"] == "composer"
    assert approval["approver"] == {"id": after_send.approver_id, "username": "approver"}
    assert approval["approved_at"] and approval["content_hash"] == after_send.content_hash
    record = EvidenceRecord.objects.get(memo=after_send, seq=approval["record"])
    assert record.kind == Kind.APPROVAL and record.payload["rendered"] == approval["rendered"]
    # No template here depends on anyone's values: one version, the audience's first
    # developer's (the preview's), in each language, in our layout.
    assert [(v["developer"], v["language"]) for v in approval["rendered"]] == [("cn-1", "en"), ("cn-1", "zh-hans")]
    assert all(len(v[part]) == 64 for v in approval["rendered"] for part in ("subject", "text", "html"))
    # The subject cn-1 was sent is the approved one, by its hash (the bodies hold their own link).
    subject = next(m.subject for m in mail.outbox if m.to == ["Wang Wei <cn-1@example.com>"])
    chinese = next(v for v in approval["rendered"] if v["language"] == "zh-hans")
    assert hashlib.sha256(subject.encode()).hexdigest() == chinese["subject"]


def test_a_version_for_each_branch_of_the_templates_is_hashed(developers):
    memo = approve(
        make_memo(subject="{% if developer.country == 'CN' %}China{% else %}Elsewhere{% endif %}: blocked soon")
    )
    rendered = EvidenceRecord.objects.get(memo=memo, kind=Kind.APPROVAL).payload["rendered"]
    assert {v["developer"] for v in rendered} == {"cn-1", "ru-1"}  # CN's branch and everyone else's
    subjects = {(v["developer"], v["language"]): v["subject"] for v in rendered}
    assert subjects[("cn-1", "en")] != subjects[("ru-1", "en")]


def test_it_lists_every_case_with_its_replies_and_decisions(after_send, staff):
    document = exported(after_send)
    assert [c["kind"] for c in document["cases"]] == ["dispute", "help", "objection", "dispute"]
    dispute = case_of(document, "ru-1")
    assert dispute["status"] == "resolved" and dispute["outcome"] == "corrected"
    assert dispute["rationale"] == RATIONALE
    assert dispute["resolved_by"] == {"id": staff.pk, "username": "case-handler"} and dispute["resolved_at"]
    assert dispute["resolution"] | {"resolved_at": None} == {
        "outcome": "corrected",
        "rationale": RATIONALE,
        "previous_country": "RU",
        "new_country": "KZ",
        "exempt": True,
        "resolved_by": staff.pk,
        "resolved_at": None,
    }
    [decision] = dispute["entries"]
    assert decision["kind"] == "decision" and decision["outcome"] == "corrected" and decision["record"]
    assert decision["text"] == RATIONALE and decision["status"] == "resolved"
    assert (decision["previous_country"], decision["new_country"], decision["exempt"]) == ("RU", "KZ", True)
    assert decision["notification"]["status"] == "queued" and len(decision["notification"]["text_hash"]) == 64
    help_case = case_of(document, "cn-2")
    assert help_case["status"] == "waiting" and help_case["assignee"]["username"] == "case-handler"
    [reply] = help_case["entries"]  # the internal note stays out
    assert reply["kind"] == "reply" and reply["text"] == "The v2 API only." and reply["by"]["id"] == staff.pk
    chained = EvidenceRecord.objects.get(memo=after_send, seq=reply["record"])
    assert chained.kind == Kind.CASE and chained.payload["notification_hash"] == reply["notification"]["text_hash"]
    assert case_of(document, "ru-2")["entries"] == [] and case_of(document, "ru-2")["status"] == "open"
    assert "Internal" not in json.dumps(document)


def test_each_recipient_has_a_final_standing_and_each_answer_its_page_hashes(after_send):
    document = exported(after_send)
    standing = {r["developer"]: r["standing"] for r in document["recipients"]}
    assert standing == {
        "cn-1": "acknowledged",
        "ru-1": "exempted",
        "cn-2": "help pending",
        "ru-2": "objected",
        "cn-3": "not answered",
        "ru-3": "not sent",
        "cn-4": "dispute pending",
    }
    answer = next(r for r in document["recipients"] if r["developer"] == "cn-1")["answers"][0]
    row = Answer.objects.get(pk=answer["id"])
    assert len(answer["statement_hash"]) == len(answer["page_hash"]) == 64
    assert (answer["statement_hash"], answer["page_hash"]) == (row.statement_hash, row.page_hash)
    chained = EvidenceRecord.objects.get(memo=after_send, kind=Kind.ANSWER, object_id=answer["id"]).payload
    assert (chained["statement_hash"], chained["page_hash"]) == (row.statement_hash, row.page_hash)
    assert document["withdrawal"] is None and document["supersedes"] is None and document["corrections"] == []


def test_the_csv_gives_the_standing_and_the_answers_hashes(after_send):
    out = io.StringIO()
    call_command("export_evidence", after_send.slug, "--format", "csv", stdout=out)
    rows = {r["developer"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert rows["cn-1"]["standing"] == "acknowledged" and rows["ru-3"]["standing"] == "not sent"
    hashes = {a.developer.external_id: a for a in Answer.objects.filter(memo=after_send).select_related("developer")}
    assert rows["cn-1"]["statement_hash"] == hashes["cn-1"].statement_hash != ""
    assert rows["ru-2"]["page_hash"] == hashes["ru-2"].page_hash != ""
    assert rows["cn-3"]["statement_hash"] == ""


def test_a_withdrawn_memo_says_so_and_who_had_not_acknowledged_stands_withdrawn(after_send, staff, tmp_path):
    memo = withdrawn(after_send, staff)
    document = exported(memo, tmp_path / "evidence.json")
    withdrawal = document["withdrawal"]
    assert withdrawal["reason"] == "The date was wrong." and withdrawal["by"]["username"] == "case-handler"
    assert withdrawal["notified"] == 6 and withdrawal["record"]  # all but ru-3, whose email failed
    assert sorted(withdrawal["notice_hashes"]) == ["en", "zh-hans"]
    standing = {r["developer"]: r["standing"] for r in document["recipients"]}
    assert standing["cn-1"] == "acknowledged" and standing["ru-1"] == "exempted"
    assert standing["cn-3"] == standing["cn-2"] == standing["cn-4"] == "withdrawn"
    assert standing["ru-3"] == "not sent"
    assert "evidence of regions-blocked verifies" in verify_file(tmp_path / "evidence.json")
    # Its reason edited in the file:
    edited = tampered(tmp_path / "evidence.json", document, lambda d: d["withdrawal"].update(reason="Sent in error."))
    with pytest.raises(
        CommandError, match="the export's withdrawal: its reason differs from the chain's withdrawal record"
    ):
        verify_file(edited)


def test_a_correction_and_the_memo_it_corrects_name_each_other(after_send, tmp_path):
    correction = approve(memo_correction_create(memo=after_send, by=after_send.author))
    assert exported(after_send)["corrections"] == [{"id": correction.pk, "slug": correction.slug, "status": "approved"}]
    document = exported(correction, tmp_path / "correction.json")
    assert document["supersedes"] == {"id": after_send.pk, "slug": "regions-blocked"}
    assert "verifies" in verify_file(tmp_path / "correction.json")
    edited = tampered(tmp_path / "correction.json", document, lambda d: d.update(supersedes=None))
    with pytest.raises(CommandError, match="the export's approval: its supersedes differs"):
        verify_file(edited)


def test_the_export_verifies_in_the_database_and_alone(after_send, tmp_path):
    out = io.StringIO()
    call_command("verify_evidence", after_send.slug, stdout=out)
    assert "evidence verifies" in out.getvalue()
    exported(after_send, tmp_path / "evidence.json")
    assert "evidence of regions-blocked verifies" in verify_file(tmp_path / "evidence.json")


def _reply(document: dict[str, Any]) -> dict[str, Any]:
    return case_of(document, "cn-2")["entries"][0]


def _recipient(document: dict[str, Any], developer: str) -> dict[str, Any]:
    return next(r for r in document["recipients"] if r["developer"] == developer)


def _reopened(document: dict[str, Any], developer: str) -> None:
    """A decided dispute made to look open throughout the file, its standing too."""
    case_of(document, developer).update(status="open", outcome="", rationale="", resolution=None)
    _recipient(document, developer).update(standing="dispute pending")


def _cn1_answer(document: dict[str, Any]) -> dict[str, Any]:
    return _recipient(document, "cn-1")["answers"][0]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            lambda d: d["approval"].update(approver={"id": d["approval"]["author"]["id"], "username": "composer"}),
            "the export's approval: its approver, approver's username differ from the chain's approval record",
        ),
        (
            lambda d: d["approval"]["approver"].update(username="someone-else"),
            "the export's approval: its approver's username differs",
        ),
        (
            lambda d: d["approval"].update(content_hash="0" * 64),
            "the export's approval: its content_hash differs from the chain's approval record",
        ),
        (lambda d: d["approval"]["rendered"][0].update(text="0" * 64), "the export's approval: its rendered differs"),
        (
            lambda d: case_of(d, "ru-1").update(rationale="Nobody asked."),
            r"the export's case \d+: its rationale differs from the chain's last record of it",
        ),
        (
            lambda d: case_of(d, "ru-1")["entries"][0].update(rationale="Nobody asked."),
            r"the export's case \d+'s decision \d+: its rationale differs from record \d+ \(case \d+\)",
        ),
        (
            lambda d: case_of(d, "ru-1")["resolution"].update(outcome="confirmed"),
            r"the export's case \d+: its decision outcome differs",
        ),
        (
            lambda d: case_of(d, "ru-1")["resolution"].update(new_country="US"),
            r"the export's case \d+: its new_country differs from the chain's last record of it",
        ),
        (
            lambda d: case_of(d, "ru-1")["entries"][0].update(previous_country="KZ"),
            r"the export's case \d+'s decision \d+: its previous_country differs from record \d+",
        ),
        (
            lambda d: _reply(d).update(text="We will call you."),
            r"the export's case \d+'s reply \d+: its text differs from record \d+ \(case \d+\)",
        ),
        (
            lambda d: case_of(d, "cn-2").update(entries=[]),
            r"record \d+ \(case \d+\): the export's cases leave out the case entry it proves",
        ),
        (
            lambda d: _cn1_answer(d).update(statement_hash="0" * 64),
            r"the export's answer \d+ of cn-1: its statement_hash differs from record \d+ \(answer \d+\)",
        ),
        (
            lambda d: _cn1_answer(d).update(page_hash="0" * 64),
            r"the export's answer \d+ of cn-1: its page_hash differs",
        ),
        (lambda d: d.update(approval=None), "the export leaves out the approval its chain records"),
        (
            lambda d: _recipient(d, "cn-3")["answers"].append({"response": "acknowledged"}),
            "the export's answers of cn-3: one has no id",
        ),
        (
            lambda d: _cn1_answer(d).update(at="2020-01-01T00:00:00+00:00"),
            r"the export's answer \d+ of cn-1: its at differs from record \d+ \(answer \d+\)",
        ),
        (
            lambda d: _recipient(d, "cn-2")["answers"][0].update(comment="Nothing, thanks."),
            r"the export's answer \d+ of cn-2: its comment differs",
        ),
        (
            lambda d: _recipient(d, "ru-1")["answers"][0].update(country_claimed="RU"),
            r"the export's answer \d+ of ru-1: its country_claimed differs",
        ),
        (
            lambda d: _recipient(d, "cn-3").update(standing="acknowledged"),
            "the export's standing of cn-3: 'acknowledged', and its answers and cases say 'not answered'",
        ),
        (
            lambda d: _recipient(d, "cn-4").update(standing="not answered"),
            "the export's standing of cn-4: 'not answered', and its answers and cases say 'dispute pending'",
        ),
        (
            lambda d: _reopened(d, "ru-1"),
            r"the export's case \d+: its resolved, outcome, .* differ from the chain's last record of it",
        ),
    ],
)
def test_an_export_edited_after_it_was_made_fails_naming_what_differs(after_send, tmp_path, change, named):
    document = exported(after_send, tmp_path / "evidence.json")
    with pytest.raises(CommandError, match=named):
        verify_file(tampered(tmp_path / "evidence.json", document, change))


def test_the_memo_pages_evidence_json_button_gives_the_same_self_contained_file(after_send, admin_client, tmp_path):
    response = admin_client.get(reverse("admin:memos_memo_evidence", args=[after_send.pk, "json"]))
    assert response.status_code == 200
    path = tmp_path / "from-the-admin.json"
    path.write_bytes(b"".join(response.streaming_content))
    document = json.loads(path.read_text())
    assert document["approval"]["approver"]["username"] == "approver" and len(document["cases"]) == 4
    assert "evidence of regions-blocked verifies" in verify_file(path)


def test_cases_come_a_page_at_a_time_and_none_is_left_out(after_send, monkeypatch):
    whole = exported(after_send)["cases"]
    monkeypatch.setattr(export_sections, "CASES_PAGE", 1)
    assert exported(after_send)["cases"] == whole and len(whole) == 4


def test_a_dispute_carried_to_a_correction_and_decided_there_verifies_on_both_memos(after_send, staff, tmp_path):
    """cn-4's dispute, still open, is carried to the correction (its case on the earlier
    memo ends "carried") and decided there: both memos verify, in the database and alone,
    and only the correction's case holds the decision."""
    correction = approve(memo_correction_create(memo=after_send, by=after_send.author))
    correction = sent_memo(correction, at=timezone.now() - timedelta(minutes=30))
    cases_carry_over(from_memo=after_send, to_memo=correction)  # as the correction's send starts
    carried = Case.objects.get(memo=correction, developer__external_id="cn-4")
    assert carried.carried_from is not None and carried.carried_from.outcome == "carried"
    case_decide_dispute(case=carried, by=staff, outcome="exempted", rationale="A proxy's traffic.")
    for memo in (after_send, correction):
        evidence_seal(memo_id=memo.pk)
        out = io.StringIO()
        call_command("verify_evidence", memo.slug, stdout=out)
        assert "evidence verifies" in out.getvalue()
        document = exported(memo, tmp_path / f"{memo.slug}.json")
        assert f"evidence of {memo.slug} verifies" in verify_file(tmp_path / f"{memo.slug}.json")
        case = case_of(document, "cn-4")
        if memo == after_send:
            assert case["outcome"] == "carried" and case["resolution"] is None
            assert "exempt" not in case["entries"][-1]
        else:
            assert case["resolution"]["outcome"] == "exempted" and case["entries"][-1]["exempt"] is True


def test_verify_file_recomputes_standing_as_the_export_decides_it():
    """export_claims.standing_of is the export's decision (export.standing asks it), read
    with no Django: its names for statuses, answers and cases are the models'."""
    assert export_claims._HANDED_OVER == DELIVERY_HANDED_OVER
    assert (export_claims._ACKNOWLEDGED, export_claims._OBJECTS) == (
        Answer.Response.ACKNOWLEDGED,
        Answer.Response.OBJECTS,
    )
    assert export_claims._DISPUTES == (Answer.Response.DISPUTES_REGION, Answer.Response.DISPUTES_TRAFFIC)
    assert (export_claims._DISPUTE, export_claims._HELP) == (Case.Kind.DISPUTE, Case.Kind.HELP)
    assert {v for k, v in vars(Standing).items() if k.isupper()} == {
        export_claims.standing_of(status=s, responses=r, exempted=e, undecided=u, open_cases=o, withdrawn=w)
        for s in ("sent", "failed")
        for r in (set(), {"acknowledged"}, {"objects"})
        for e in (False, True)
        for u in (False, True)
        for o in (set(), {"help"})
        for w in (False, True)
    }
