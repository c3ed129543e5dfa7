"""A correction: a new memo that supersedes one already sent (or withdrawn).

It starts as a draft with everything of the earlier memo a composer wrote (texts and
translations, dates, the statement, audience rules, regions and traffic rules) and is
approved and sent like any other memo. Its audience is its own rules' (so those who
acknowledged the earlier memo are asked again), less the developers exempted from the
earlier memo after a dispute (audience.py). When its send starts, the earlier memo's
open cases move to it (correction_started, the task dispatch.memo_send_start enqueues
once the send has started), the earlier memo's reminders stop (reminders.py), and its
page says it was corrected and takes no more answers (answer/answers.py).
"""

from __future__ import annotations

from django.db import transaction

from memo_service.lib.db import row_lock
from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.cases.cases import CARRIED, case_resolve
from memo_service.memos.cases.opening import CASES_OPEN
from memo_service.memos.evidence.append import evidence_append
from memo_service.memos.evidence.payloads import case_payload
from memo_service.memos.models import (
    MEMO_SHOWN,
    TRANSLATION_FIELDS,
    Case,
    CaseEntry,
    EvidenceRecord,
    Memo,
    MemoTranslation,
)

MemoStatus = Memo.Status
# A memo a correction can supersede: its emails went out and its send is over.
MEMO_CORRECTABLE = (MemoStatus.SENT, MemoStatus.WITHDRAWN)
# What a correction takes from the earlier memo: every field its composer wrote. The
# rest (title and slug, its own; status, approval, send and withdrawal, the earlier
# memo's history) starts afresh; tests/test_correction.py names each field one way or
# the other, so a new field has to be placed.
COPIED_FIELDS = (
    "subject",
    "html_body",
    "text_body",
    "effective_date",
    "ack_deadline",
    "include_countries",
    "exclude_countries",
    "active_only",
    "active_since",
    "audience_basis",
    "traffic_countries",
    "traffic_days",
    "traffic_min_requests",
    "attribute_filters",
    "reminder_days",
    "reminder_subject",
    "reminder_html",
    "reminder_text",
    "statement",
    "email_receipt",
)
COPIED_RELATIONS = ("include_regions", "traffic_regions")
SUFFIX = "-correction"
TITLE_MAX = Memo._meta.get_field("title").max_length or 200
SLUG_MAX = Memo._meta.get_field("slug").max_length or 100


class CorrectionRefused(Exception):
    pass


def _fresh_slug(slug: str) -> str:
    base = slug[: SLUG_MAX - len(SUFFIX) - 4] + SUFFIX
    candidate, n = base, 1
    while Memo.objects.filter(slug=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def memo_correction_create(*, memo: Memo, by: Actor) -> Memo:
    """A draft correcting `memo` (sent or withdrawn), prefilled from it, by `by`."""
    memo = Memo.objects.get(pk=memo.pk)
    if memo.status not in MEMO_CORRECTABLE:
        raise CorrectionRefused(
            f"“{memo.title}” is {memo.get_status_display()}: only a memo that was sent (or withdrawn) can be "
            "corrected; edit it instead."
            if memo.is_editable
            else f"“{memo.title}” is {memo.get_status_display()}: only a memo that was sent (or withdrawn) can be "
            "corrected."
        )
    author = by if by is not None and by.pk else None
    with transaction.atomic():
        correction = Memo.objects.create(
            title=f"{memo.title} (correction)"[:TITLE_MAX],
            slug=_fresh_slug(memo.slug),
            supersedes=memo,
            author=author,
            last_edited_by=author,
            **{name: getattr(memo, name) for name in COPIED_FIELDS},
        )
        for relation in COPIED_RELATIONS:
            getattr(correction, relation).set(getattr(memo, relation).all())
        MemoTranslation.objects.bulk_create(
            MemoTranslation(memo=correction, **{name: getattr(t, name) for name in TRANSLATION_FIELDS})
            for t in memo.translations.all()
        )
        audit_record(actor=by, action="memo.created", obj=correction, supersedes=memo.pk)
        audit_record(actor=by, action="memo.correction_created", obj=memo, correction=correction.pk)
    return correction


def cases_carry_over(*, from_memo: Memo, to_memo: Memo) -> int:
    """Each open or waiting case of `from_memo` continues on `to_memo`: a new case with
    the same answer, developer, kind and assignee names the one it continues, which is
    resolved "carried" (cases/cases.py). Both steps are in the evidence of their memo.
    A rerun carries nothing twice (a carried case is resolved); returns how many."""
    with transaction.atomic():
        # An answer to the earlier memo reads it FOR SHARE and refuses once a correction
        # is being sent (answer/answers.py): one that began before waits to be carried.
        row_lock(Memo.objects.filter(pk=from_memo.pk))
        return _carry(from_memo, to_memo)


def _carry(from_memo: Memo, to_memo: Memo) -> int:
    carried = 0
    for old in Case.objects.filter(memo=from_memo, status__in=CASES_OPEN).order_by("id"):
        new = Case.objects.create(
            memo=to_memo,
            developer_id=old.developer_id,
            answer_id=old.answer_id,
            kind=old.kind,
            assignee_id=old.assignee_id,
            carried_from=old,
        )
        case_resolve(
            case=old,
            by=None,
            outcome=CARRIED,
            rationale=f"Carried to the correction “{to_memo.title}” ({to_memo.slug}), case #{new.pk}.",
        )
        entry = CaseEntry.objects.create(
            case=new, kind=CaseEntry.Kind.STATUS, text=f"Carried from case #{old.pk} of “{from_memo.title}”."
        )
        entry = CaseEntry.objects.select_related("case__developer", "notification").get(pk=entry.pk)
        evidence_append(
            memo_id=to_memo.pk, kind=EvidenceRecord.Kind.CASE, object_id=entry.pk, payload=case_payload(entry)
        )
        carried += 1
    if carried:
        audit_record(actor=None, action="memo.cases_carried", obj=from_memo, correction=to_memo.pk, cases=carried)
    return carried


def correction_started(*, memo_id: int) -> int:
    """The correction `memo_id` started sending: carry its earlier memo's open cases."""
    memo = Memo.objects.select_related("supersedes").get(pk=memo_id)
    if memo.supersedes is None or memo.status not in MEMO_SHOWN:
        return 0
    return cases_carry_over(from_memo=memo.supersedes, to_memo=memo)
