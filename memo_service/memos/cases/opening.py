"""Opening a case: the answers that need a person open one, in the transaction that
records them. Below answer/answers.py (which calls it) and above the models only."""

from __future__ import annotations

from django.db.models import QuerySet

from memo_service.memos.models import Answer, Case, Memo

# The answers a person has to read, and the kind of case each opens.
CASE_KIND_OF_ANSWER = {
    Answer.Response.NEEDS_HELP: Case.Kind.HELP,
    Answer.Response.DISPUTES_REGION: Case.Kind.DISPUTE,
    Answer.Response.DISPUTES_TRAFFIC: Case.Kind.DISPUTE,
    Answer.Response.OBJECTS: Case.Kind.OBJECTION,
}
# Cases someone still has to act on or hear back about.
CASES_OPEN = (Case.Status.OPEN, Case.Status.WAITING)


def case_open(answer: Answer) -> Case | None:
    """The case `answer` opens (None for an acknowledgement): call it in the transaction
    that creates the answer, so an answer that needs a person never lacks its case."""
    kind = CASE_KIND_OF_ANSWER.get(Answer.Response(answer.response))
    if kind is None:
        return None
    case, _ = Case.objects.get_or_create(
        answer=answer, memo_id=answer.memo_id, defaults={"developer_id": answer.developer_id, "kind": kind}
    )
    return case


def cases_open_of(memo: Memo) -> QuerySet[Case]:
    """The memo's cases still open or waiting, oldest first (the dashboard's list)."""
    return (
        Case.objects.filter(memo=memo, status__in=CASES_OPEN)
        .select_related("developer", "assignee")
        .order_by("opened_at", "id")
    )
