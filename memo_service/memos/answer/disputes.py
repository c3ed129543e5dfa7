"""Deciding disputes: "my region is wrong" and "this traffic is not mine"."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from memo_service.developers.models import Developer
from memo_service.memos.answer.answers import DISPUTES
from memo_service.memos.audience import audience_reasons
from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.models import Answer, DisputeResolution, Memo

Outcome = DisputeResolution.Outcome


class DisputeInvalid(Exception):
    pass


def dispute_resolve(
    *, answer: Answer, outcome: str, by: Actor, note: str, memo: Memo | None = None
) -> DisputeResolution:
    """Decide a dispute on `memo`, the memo its case is on (the answer's own by default,
    or a correction it was carried to), with `note` the rationale the developer reads
    (required): the dispute's case calls it (cases/cases.py case_decide_dispute). For a
    region: "corrected" moves the developer to the country they claimed (audited), keeps
    the country they had as previous_country and, if the new one is outside `memo`'s
    audience, exempts them from it. For either kind: "confirmed" keeps what was
    recorded, "exempted" takes the developer out of the memo (the traffic was a proxy's,
    say). The developer's page shows it."""
    if not note.strip():
        raise DisputeInvalid("a decision needs its rationale")
    if answer.response not in DISPUTES:
        raise DisputeInvalid("only a 'my region is wrong' or 'this traffic is not mine' answer can be resolved")
    if outcome == Outcome.CORRECTED and answer.response != Answer.Response.DISPUTES_REGION:
        raise DisputeInvalid("a traffic dispute is confirmed or exempted; there is no country to correct")
    try:
        return _resolve(answer, memo or answer.memo, outcome, by, note)
    except IntegrityError:  # another admin resolved it at the same moment
        raise DisputeInvalid(f"the dispute of {answer.developer.external_id} is already resolved") from None


def _resolve(answer: Answer, memo: Memo, outcome: str, by: Actor, note: str) -> DisputeResolution:
    with transaction.atomic():
        if DisputeResolution.objects.filter(answer=answer).exists():
            raise DisputeInvalid(f"the dispute of {answer.developer.external_id} is already resolved")
        exempt = False
        new_country = previous_country = ""
        if outcome == Outcome.CORRECTED:
            new_country = answer.country_claimed.code
            developer = Developer.objects.select_for_update().get(pk=answer.developer_id)
            previous_country = developer.country.code
            Developer.objects.filter(pk=developer.pk).update(country=new_country)
            audit_record(
                actor=by,
                action="developer.country_changed",
                obj=developer,
                old=previous_country,
                new=new_country,
                memo=memo.slug,
                dispute=answer.pk,
            )
            exempt = new_country not in audience_reasons(memo)
        elif outcome == Outcome.EXEMPTED:
            exempt = True
        elif outcome != Outcome.CONFIRMED:
            raise DisputeInvalid(f"unknown outcome {outcome!r}")
        resolution = DisputeResolution.objects.create(
            answer=answer,
            outcome=outcome,
            new_country=new_country,
            previous_country=previous_country,
            exempt=exempt,
            note=note.strip(),
            resolved_by=by,
        )
        audit_record(actor=by, action="dispute.resolved", obj=answer, outcome=outcome, exempt=exempt)
    return resolution
