"""A case's life after it opens (opening.py): who owns it, internal notes, replies emailed
to the developer, its status, and how it ends (a dispute by its decision). Each write
locks the case's row, appends a CaseEntry, and what the developer is told or what
decides the case is chained as evidence (a CASE record) in the same transaction."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from memo_service.lib.db import row_lock
from memo_service.memos.answer.disputes import DisputeInvalid, dispute_resolve
from memo_service.memos.answer.sent_text import subject_sent
from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.evidence.append import evidence_append
from memo_service.memos.evidence.payloads import case_payload
from memo_service.memos.models import (
    CASE_CARRIED,
    Answer,
    Case,
    CaseEntry,
    DisputeResolution,
    EvidenceRecord,
    Notification,
)
from memo_service.memos.notify.notifications import notification_create

Status = Case.Status
Entry = CaseEntry.Kind
# A note, a reply or a rationale: a few paragraphs, never a document.
MAX_TEXT = 5_000
# How a help request or an objection ends; "carried": continued on a correction's case.
CASE_OUTCOMES = {
    "answered": "answered",
    "noted": "noted, nothing to change",
    "withdrawn": "withdrawn by the developer",
    "carried": "carried to the correction",
}
CARRIED = CASE_CARRIED
# Who may handle cases (assignees, writers): the permission the Composer role holds.
CASE_PERMISSION = "memos.change_case"


class CaseInvalid(Exception):
    """A write refused: the reason says what to fix; nothing was changed."""


def outcome_label(case: Case) -> str:
    """What the case's outcome means, in words ("" while it is open)."""
    if case.kind == Case.Kind.DISPUTE and case.outcome in DisputeResolution.Outcome.values:
        return str(DisputeResolution.Outcome(case.outcome).label)
    return CASE_OUTCOMES.get(case.outcome, case.outcome)


def may_handle_cases(user: Any) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(CASE_PERMISSION))


def case_assign(*, case: Case, by: Actor, assignee: User | None) -> Case:
    """Give the case to `assignee` (None: to nobody), who must be able to handle cases."""
    if assignee is not None and not may_handle_cases(assignee):
        raise CaseInvalid(f"{assignee.get_username()} cannot handle cases: that takes the Composer role.")
    with transaction.atomic():
        case = _locked(case)
        _refuse_resolved(case)
        if case.assignee_id == (assignee.pk if assignee is not None else None):
            return case
        case.assignee = assignee
        case.save(update_fields=["assignee", "updated_at"])
        _entry(case, Entry.ASSIGNED, by, assignee.get_username() if assignee is not None else "")
        audit_record(actor=by, action="case.assigned", obj=case, assignee=assignee.pk if assignee else None)
    return case


def case_note(*, case: Case, by: Actor, text: str) -> CaseEntry:
    """An internal note: staff read it, the developer never does."""
    text = _text(text, "Write the note.")
    with transaction.atomic():
        case = _locked(case)
        return _entry(case, Entry.NOTE, by, text)


def case_reply(*, case: Case, by: Actor, text: str) -> CaseEntry:
    """Email `text` to the developer in their language (through the same provider as the
    memo), and wait for them: the case moves to "waiting for the developer"."""
    text = _text(text, "Write the reply.")
    with transaction.atomic():
        case = _locked(case)
        _refuse_resolved(case)
        if case.developer.erased_at is not None:
            raise CaseInvalid("The developer's personal data was erased: there is no one to reply to.")
        notification = notification_create(
            kind=Notification.Kind.CASE_REPLY,
            memo=case.memo,
            developer=case.developer,
            context={"text": text, "case": case, "subject": subject_sent(case.memo, case.developer)},
        )
        case.status = Status.WAITING
        case.save(update_fields=["status", "updated_at"])
        entry = _entry(case, Entry.REPLY, by, text, notification)
        _prove(entry)
        audit_record(actor=by, action="case.replied", obj=case, notification=notification.pk)
    return entry


def case_set_status(*, case: Case, by: Actor, status: str) -> Case:
    """Open or waiting for the developer; a case is resolved by case_resolve or, a
    dispute, by case_decide_dispute, and stays resolved."""
    if status not in (Status.OPEN, Status.WAITING):
        raise CaseInvalid("Choose open or waiting for the developer; resolve a case with its outcome.")
    with transaction.atomic():
        case = _locked(case)
        _refuse_resolved(case)
        if case.status == status:
            return case
        case.status = status
        case.save(update_fields=["status", "updated_at"])
        _entry(case, Entry.STATUS, by, status)
    return case


def case_resolve(*, case: Case, by: Actor, outcome: str, rationale: str) -> Case:
    """End a help request or an objection with `outcome` (CASE_OUTCOMES) and why. Any
    case, a dispute too, may end "carried": its correction's case continues it."""
    rationale = _text(rationale, "Say why: the rationale is required.")
    if outcome not in CASE_OUTCOMES:
        raise CaseInvalid(f"Choose an outcome: {', '.join(CASE_OUTCOMES)}.")
    with transaction.atomic():
        case = _locked(case)
        _refuse_resolved(case)
        if case.kind == Case.Kind.DISPUTE and outcome != CARRIED:
            raise CaseInvalid("A dispute is decided: correct the region, confirm it, or exempt the developer.")
        _close(case, by, outcome, rationale)
        _prove(_entry(case, Entry.DECISION, by, rationale))
    return case


def case_decide_dispute(*, case: Case, by: Actor, outcome: str, rationale: str) -> Case:
    """Decide a dispute (DisputeResolution.Outcome: corrected, confirmed, exempted) with
    the rationale the developer reads; they are emailed the outcome in their language.
    A correction keeps the developer's earlier country beside the new one."""
    with transaction.atomic():
        case = _locked(case)
        rationale = case_decision_check(case=case, outcome=outcome, rationale=rationale)
        try:
            resolution = dispute_resolve(answer=case.answer, memo=case.memo, outcome=outcome, by=by, note=rationale)
        except DisputeInvalid as exc:
            raise CaseInvalid(str(exc)[:1].upper() + str(exc)[1:] + ".") from None
        _close(case, by, outcome, rationale)
        notification = None
        if case.developer.erased_at is None:
            notification = notification_create(
                kind=Notification.Kind.DISPUTE_OUTCOME,
                memo=case.memo,
                developer=case.developer,
                context={
                    "case": case,
                    "resolution": resolution,
                    "rationale": rationale,
                    "subject": subject_sent(case.memo, case.developer),
                },
            )
        _prove(_entry(case, Entry.DECISION, by, rationale, notification))
    return case


def case_decision_check(*, case: Case, outcome: str, rationale: str) -> str:
    """Raises CaseInvalid unless `case` is a dispute still open that `outcome` can decide
    with `rationale` (required); returns the rationale as it is kept. The case page asks
    it before its confirmation step, case_decide_dispute again when deciding."""
    rationale = _text(rationale, "Say why: the rationale is required, and the developer reads it.")
    if case.kind != Case.Kind.DISPUTE:
        raise CaseInvalid(f"Only a dispute is decided; this is a {case.get_kind_display()}.")
    _refuse_resolved(case)
    if outcome not in decision_outcomes(case):
        raise CaseInvalid(
            "Choose a decision: " + ", ".join(str(label) for label in decision_outcomes(case).values()) + "."
        )
    return rationale


def decision_outcomes(case: Case) -> dict[str, str]:
    """The decisions a dispute can have, with their labels: there is a country to correct
    only in a region dispute."""
    Outcome = DisputeResolution.Outcome
    outcomes = [Outcome.CORRECTED, Outcome.CONFIRMED, Outcome.EXEMPTED]
    if case.answer.response != Answer.Response.DISPUTES_REGION:
        outcomes.remove(Outcome.CORRECTED)
    return {o.value: str(o.label) for o in outcomes}


def _close(case: Case, by: Actor, outcome: str, rationale: str) -> None:
    case.status = Status.RESOLVED
    case.outcome = outcome
    case.rationale = rationale
    case.resolved_by = by if by is not None and by.pk else None
    case.resolved_at = timezone.now()
    case.save(update_fields=["status", "outcome", "rationale", "resolved_by", "resolved_at", "updated_at"])
    audit_record(actor=by, action="case.resolved", obj=case, outcome=outcome)


def _text(text: str, missing: str) -> str:
    text = (text or "").strip()
    if not text:
        raise CaseInvalid(missing)
    if len(text) > MAX_TEXT:
        raise CaseInvalid(f"Please keep it under {MAX_TEXT} characters.")
    if "\x00" in text:
        raise CaseInvalid("The text contains a character that cannot be stored.")
    return text


def _locked(case: Case) -> Case:
    """The case as it is now, its row locked until the transaction ends: two people
    acting at once act one after the other."""
    row_lock(Case.objects.filter(pk=case.pk))
    return Case.objects.select_related("memo", "developer", "answer", "assignee").get(pk=case.pk)


def _refuse_resolved(case: Case) -> None:
    if case.status == Status.RESOLVED:
        raise CaseInvalid(f"This case is resolved ({outcome_label(case)}): it no longer changes.")


def _entry(case: Case, kind: str, by: Actor, text: str, notification: Notification | None = None) -> CaseEntry:
    author = by if by is not None and by.pk else None
    entry = CaseEntry.objects.create(case=case, kind=kind, author=author, text=text, notification=notification)
    entry.case = case
    return entry


def _prove(entry: CaseEntry) -> None:
    evidence_append(
        memo_id=entry.case.memo_id, kind=EvidenceRecord.Kind.CASE, object_id=entry.pk, payload=case_payload(entry)
    )
