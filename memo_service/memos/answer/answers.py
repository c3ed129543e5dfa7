"""An answer: what a developer says of a memo, checked, recorded once, and chained as
evidence (the link it comes through is tokens.py's)."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.translation import gettext_noop
from django_countries import countries

from memo_service.api.models import ApiClient
from memo_service.developers.models import Developer
from memo_service.lib.db import row_lock
from memo_service.memos.answer.receipt import receipt_email
from memo_service.memos.answer.sent_text import delivery_shown, sent_memo
from memo_service.memos.answer.statement import assent_shown
from memo_service.memos.answer.tokens import AnswerTarget, DeveloperErased
from memo_service.memos.cases.opening import case_open
from memo_service.memos.evidence.append import evidence_append
from memo_service.memos.evidence.payloads import answer_payload
from memo_service.memos.models import (
    MEMO_SHOWN,
    Answer,
    Case,
    Delivery,
    EvidenceRecord,
    Memo,
)
from memo_service.memos.webhooks.events import notify_answer


class AnswerInvalid(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


class ContentHashMismatch(Exception):
    """The answer was given to a text other than the one sent to the developer."""

    def __init__(self, expected: str) -> None:
        super().__init__(f"the text sent has hash {expected}")
        self.expected = expected


# A person opens the email, reads the memo and presses a button: under this many seconds
# after the send, a scanner following the link is the likelier explanation.
FAST_ANSWER_SECONDS = 15
SCANNER_AGENTS = (
    "safelinks",
    "microsoft office",
    "ms-office",
    "bingpreview",
    "barracuda",
    "mimecast",
    "proofpoint",
    "fireeye",
    "trendmicro",
    "symantec",
    "zscaler",
    "urldefense",
    "python-requests",
    "python-urllib",
    "curl/",
    "wget/",
    "go-http-client",
    "okhttp",
    "headlesschrome",
    "phantomjs",
    "bot",
    "spider",
    "crawler",
    "preview",
)
MAX_COMMENT = 2_000


def automation_reasons(*, seconds_since_delivery: float | None, user_agent: str, interacted: bool) -> list[str]:
    """Why an answer may have come from a machine rather than the developer."""
    reasons = []
    if seconds_since_delivery is not None and seconds_since_delivery < FAST_ANSWER_SECONDS:
        reasons.append(f"answered {seconds_since_delivery:.0f} s after the email was sent")
    agent = user_agent.lower()
    if not agent:
        reasons.append("no user agent")
    elif match := next((s for s in SCANNER_AGENTS if s in agent), None):
        reasons.append(f"user agent looks like a link scanner ({match.strip('/')})")
    if not interacted:
        reasons.append("no pointer, touch or key input on the page before the answer")
    return reasons


def answers_of(target: AnswerTarget) -> dict[str, Answer]:
    """The developer's answers to the memo so far, by response; with a dispute of the
    memo this one corrects that was carried here and decided exempting the developer on
    its case here (the memo no longer applies to them: memo_no_longer_applies), unless
    they answered the same here."""
    carried = Answer.objects.filter(
        Exists(Case.objects.filter(answer=OuterRef("pk"), memo=target.memo)),
        developer=target.developer,
        response__in=DISPUTES,
        resolution__exempt=True,
    ).exclude(memo=target.memo)
    own = Answer.objects.filter(memo=target.memo, developer=target.developer)
    return {a.response: a for a in [*carried.select_related("resolution"), *own.select_related("resolution")]}


def memo_no_longer_applies(answers: dict[str, Answer]) -> bool:
    """An admin decided a dispute of the developer's (region or traffic) by exempting
    them from the memo."""
    for kind in DISPUTES:
        resolution = getattr(answers.get(kind), "resolution", None)
        if resolution is not None and resolution.exempt:
            return True
    return False


# The answers that dispute why the developer is in the memo's audience.
DISPUTES = (Answer.Response.DISPUTES_REGION, Answer.Response.DISPUTES_TRAFFIC)


# The errors a developer reads, in English here; their page shows them in its language
# (the catalog's msgids are these strings).
NO_ANSWERS_WITHDRAWN = gettext_noop("This memo was withdrawn: it takes no answers.")
NO_ANSWERS_CANCELLED = gettext_noop("This memo was cancelled: it takes no answers.")
NO_ANSWERS_CORRECTED = gettext_noop("This memo was corrected: answer the corrected notice instead.")
# The statuses of memos that take no answers whatever the link, and why: taken back after
# the send, or cancelled while some of its emails had already gone out. Their pages say so.
ANSWERS_CLOSED = {Memo.Status.WITHDRAWN: NO_ANSWERS_WITHDRAWN, Memo.Status.CANCELLED: NO_ANSWERS_CANCELLED}


def _clean_answer(response: str, comment: str, country: str) -> dict[str, str]:
    Response = Answer.Response
    errors = {}
    if response not in Response.values:
        errors["response"] = gettext_noop("Choose one of the answers.")
    if len(comment) > MAX_COMMENT:
        errors["comment"] = gettext_noop("Please keep the comment under 2000 characters.")
    if "\x00" in comment:
        errors["comment"] = gettext_noop("The comment contains a character that cannot be stored.")
    if response == Response.DISPUTES_REGION and country not in dict(countries):
        errors["country"] = gettext_noop("Choose the country you are in.")
    if response == Response.NEEDS_HELP and not comment.strip():
        errors["comment"] = gettext_noop("Tell us what you need help with.")
    if response == Response.OBJECTS and not comment.strip():
        errors["comment"] = gettext_noop("Tell us why you object.")
    return errors


def answers_closed_error(status: str) -> dict[str, str] | None:
    """Why a memo in `status` takes no answers, or None when it takes them."""
    reason = ANSWERS_CLOSED.get(status)  # type: ignore[call-overload]  # a status is one of Memo.Status's values
    return {"response": reason} if reason is not None else None


def answer_record(
    *,
    target: AnswerTarget,
    response: str,
    ip_address: str | None,
    user_agent: str,
    interacted: bool,
    comment: str = "",
    country: str = "",
    channel: str = Answer.Channel.EMAIL_LINK,
    api_client: ApiClient | None = None,
    shown_hash: str | None = None,
    page_language: str | None = None,
) -> tuple[Answer, bool]:
    """Record the developer's answer, once per kind; after an acknowledgement nothing
    more is recorded. Returns (the answer, whether it was recorded now). Raises
    AnswerInvalid for a form that is not filled in correctly, or for a memo that takes
    no answers (withdrawn, cancelled), recording nothing.

    The page's answers come through the email link, given on the page in
    `page_language`: they record the page's hash and, an acknowledgement, the hash of
    the statement of assent shown beside its button (statement.py). The console's
    (channel "console") are relayed by an API client, with the hash of the text the
    console showed (`shown_hash`): one that is not the text sent raises
    ContentHashMismatch."""
    comment = comment.strip()
    _refuse_invalid(target, response, comment, country)
    memo, shown = _text_answered(target, shown_hash)
    assent = assent_shown(memo, page_language) if page_language is not None else None
    sent_at = target.delivery.sent_at
    seconds = (timezone.now() - sent_at).total_seconds() if sent_at else None
    user_agent = user_agent[:1000]
    reasons = automation_reasons(seconds_since_delivery=seconds, user_agent=user_agent, interacted=interacted)
    fields = {
        "response": response,
        "comment": comment,
        "country_claimed": country if response == Answer.Response.DISPUTES_REGION else "",
        "content_hash": target.memo.content_hash,
        "text_hash": shown.text_hash if shown is not None else "",
        "statement_hash": assent.statement_hash if assent and response == Answer.Response.ACKNOWLEDGED else "",
        "statement": assent.text if assent and response == Answer.Response.ACKNOWLEDGED else "",
        "page_hash": assent.page_hash if assent else "",
        "ip_address": ip_address,
        "user_agent": user_agent,
        "seconds_since_delivery": seconds,
        "suspected_automation": bool(reasons),
        "automation_reasons": reasons,
        "channel": channel,
        "api_client": api_client,
    }
    try:
        return _answer_save(target, fields)
    except IntegrityError:  # the same answer, posted twice at once
        return Answer.objects.get(memo=target.memo, developer=target.developer, response=response), False


def _refuse_invalid(target: AnswerTarget, response: str, comment: str, country: str) -> None:
    """Raises AnswerInvalid for a memo that takes no answers or a form that is not
    filled in correctly, then DeveloperErased for a developer whose personal data was
    erased."""
    if closed := answers_closed_error(target.memo.status):
        raise AnswerInvalid(closed)
    errors = _clean_answer(response, comment, country)
    if response == Answer.Response.DISPUTES_TRAFFIC and target.memo.audience_basis == Memo.Basis.ACCOUNT:
        errors["response"] = "This memo's audience is not chosen by API traffic: there is no traffic to dispute."
    if errors:
        raise AnswerInvalid(errors)
    if target.developer.erased_at is not None:
        raise DeveloperErased


def _text_answered(target: AnswerTarget, shown_hash: str | None) -> tuple[Memo, Delivery | None]:
    """The memo as approved (sent_memo), and the email whose text the answer is given
    on (delivery_shown). The text must be the approved one (raises NotApproved), and the
    one the console showed (`shown_hash`, raises ContentHashMismatch)."""
    memo = sent_memo(target.memo)
    shown = delivery_shown(target)
    expected_hash = shown.text_hash if shown is not None else target.memo.content_hash
    if shown_hash is not None and shown_hash != expected_hash:
        raise ContentHashMismatch(expected_hash)
    return memo, shown


def correction_sent(memo_id: int) -> Memo | None:
    """The correction of the memo that is being (or was) sent, if any: the answers that
    count are to it now, and the memo's own page takes none."""
    return Memo.objects.filter(supersedes=memo_id, status__in=MEMO_SHOWN).order_by("-id").first()


def _memo_status_shared(memo_id: int) -> str:
    """The memo's status, its row locked FOR SHARE until the transaction ends (call inside
    one): answers share it with each other, not with a change of the memo's status.
    SQLite's IMMEDIATE transactions serialize writers already."""
    if connection.vendor != "postgresql":
        return Memo.objects.filter(pk=memo_id).values_list("status", flat=True).get()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT status FROM {Memo._meta.db_table} WHERE id = %(id)s FOR SHARE", {"id": memo_id})
        row = cursor.fetchone()
    if row is None:
        raise Memo.DoesNotExist
    return str(row[0])


def _answer_save(target: AnswerTarget, fields: dict[str, Any]) -> tuple[Answer, bool]:
    """Create the answer (`fields`) unless one already stands in its way, with its
    evidence record and webhook: (the answer, whether it was created now)."""
    Response = Answer.Response
    response = fields["response"]
    with transaction.atomic():
        # One developer's answers one at a time, so two at once record what they would
        # one after the other (never a dispute after an acknowledgement). The lock is
        # the developer's row, not the memo's: other developers do not wait.
        row_lock(Developer.objects.filter(pk=target.developer.pk))
        # Withdrawn or cancelled since the page was opened: the status as committed now,
        # read under a share lock that a withdrawal's status change (an UPDATE) waits
        # for and that waits for it, so no answer is recorded after withdrawn_at.
        status = _memo_status_shared(target.memo.pk)
        if closed := answers_closed_error(status):
            raise AnswerInvalid(closed)
        # A correction of it is being sent: its open cases moved there (correction.py,
        # which takes this row FOR UPDATE first), and a new one would be left behind.
        if correction_sent(target.memo.pk) is not None:
            raise AnswerInvalid({"response": NO_ANSWERS_CORRECTED})
        existing = answers_of(target)
        if Response.ACKNOWLEDGED in existing:
            return existing[Response.ACKNOWLEDGED], False
        if response in existing:
            return existing[response], False
        if response == Response.ACKNOWLEDGED and memo_no_longer_applies(existing):
            raise AnswerInvalid({"response": "This memo no longer applies to you: there is nothing to acknowledge."})
        answer = Answer.objects.create(memo=target.memo, developer=target.developer, **fields)
        case_open(answer)  # help, a dispute or an objection needs a person: its case
        evidence_append(
            memo_id=target.memo.pk,
            kind=EvidenceRecord.Kind.ANSWER,
            object_id=answer.pk,
            payload=answer_payload(answer),
        )
        notify_answer(answer)
        if target.memo.email_receipt:
            receipt_email(target, answer)
    return answer, True
