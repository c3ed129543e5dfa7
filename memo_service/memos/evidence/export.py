"""The evidence export: one record per recipient (who, why, every email and what became
of it, every answer, where they stand in the end), as CSV or as a JSON document that
also carries the approval, the cases, the withdrawal (export_sections.py), the hash
chain, its signed checkpoints and the public keys (`export_evidence`, the admin's export buttons).
`verify_evidence --file` reads the JSON with no database (verify_file.py, export_file.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from django.db.models import Count
from django.utils import timezone

from memo_service.lib.csv_export import csv_lines
from memo_service.lib.db import snapshot
from memo_service.memos.evidence.export_claims import standing_of
from memo_service.memos.evidence.export_sections import (
    approval_section,
    cases_section,
    links_section,
    withdrawal_section,
)
from memo_service.memos.evidence.sequencer import checkpoint_dict, public_key, public_keys
from memo_service.memos.evidence.verify import chained_pages
from memo_service.memos.models import Answer, Case, Delivery, EvidenceCheckpoint, Memo

Response = Answer.Response

# The export's head carries the answers by channel, and so does the funnel
# (report/reports.py): they live here, in the module the report imports, not the other
# way round (evidence/ imports nothing of report/).
CHANNELS = [c.value for c in Answer.Channel]


def answers_by_channel(memo: Memo) -> dict[str, dict[str, int]]:
    """Answers of each kind, by where they were given: the emailed link's page or the
    platform's console. Every answer counts (a dispute later acknowledged counts twice)."""
    counts = {channel: {**dict.fromkeys(Response.values, 0), "total": 0} for channel in CHANNELS}
    for row in Answer.objects.filter(memo=memo).values("channel", "response").annotate(n=Count("id")):
        counts[row["channel"]][row["response"]] = row["n"]
        counts[row["channel"]]["total"] += row["n"]
    return counts


EVIDENCE_COLUMNS = [
    "developer",
    "email",
    "country_at_send",
    "reason",
    "delivery_status",
    "sent_at",
    "provider_message_id",
    "delivery_error",
    "reminders",
    "answer",
    "answered_at",
    "content_hash",
    "ip_address",
    "user_agent",
    "seconds_since_delivery",
    "suspected_automation",
    "automation_reasons",
    "country_claimed",
    "comment",
    "earlier_answers",
    "channel",
    "api_client",
    "standing",
    "statement_hash",
    "page_hash",
]
EVIDENCE_PAGE = 2_000  # recipients per query: memory stays flat at any size


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


class Standing:
    """Where each recipient stands in the end, the first that holds, in this order."""

    EXEMPTED = "exempted"  # a dispute decided so: the memo no longer applies to them
    ACKNOWLEDGED = "acknowledged"
    OBJECTED = "objected"  # answered "I object"
    NOT_SENT = "not sent"  # their email never reached the provider (queued, failed, cancelled...)
    WITHDRAWN = "withdrawn"  # the memo was taken back before they acknowledged it
    DISPUTE_PENDING = "dispute pending"  # a dispute not decided yet
    HELP_PENDING = "help pending"  # asked for help, their case not resolved yet
    NOT_ANSWERED = "not answered"  # handed over, and nothing that settles it since


_DISPUTES = (Response.DISPUTES_REGION, Response.DISPUTES_TRAFFIC)


def standing(*, status: str, answers: list[Answer], open_cases: set[str], withdrawn: bool) -> str:
    """A recipient's final standing (Standing) from their first email's `status`, their
    answers (with their resolutions loaded), the kinds of their cases not resolved yet
    and whether the memo was withdrawn (export_claims.standing_of: `--file` recomputes it)."""
    resolutions = [getattr(a, "resolution", None) for a in answers if a.response in _DISPUTES]
    decided = [r for r in resolutions if r is not None]
    return standing_of(
        status=status,
        responses={a.response for a in answers},
        exempted=any(r.exempt or r.outcome == r.Outcome.EXEMPTED for r in decided),
        undecided=len(decided) < len(resolutions),
        open_cases=open_cases,
        withdrawn=withdrawn,
    )


def _answer_row(answer: Answer) -> dict[str, Any]:
    return {
        "id": answer.pk,  # the chain's answer record names it so
        "response": answer.response,
        "at": _iso(answer.created_at),
        "content_hash": answer.content_hash,
        "ip_address": answer.ip_address,
        "user_agent": answer.user_agent,
        "seconds_since_delivery": answer.seconds_since_delivery,
        "suspected_automation": answer.suspected_automation,
        "automation_reasons": answer.automation_reasons,
        "comment": answer.comment,
        "country_claimed": str(answer.country_claimed or ""),
        "channel": answer.channel,
        "api_client": answer.api_client.name if answer.api_client else None,
        "text_hash": answer.text_hash,
        "statement_hash": answer.statement_hash,
        "statement": answer.statement,
        "page_hash": answer.page_hash,
    }


def evidence_records(memo: Memo) -> Iterator[dict[str, Any]]:
    """One record per recipient: who, why, every email and what became of it, every
    answer, and where they stand in the end."""
    withdrawn = memo.status == Memo.Status.WITHDRAWN
    # Without the values each email was rendered with: the export shows none of them.
    deliveries = Delivery.objects.defer("rendered_with")
    initial = deliveries.filter(memo=memo, kind=Delivery.Kind.INITIAL).select_related("developer").order_by("id")
    last_id = 0
    while page := list(initial.filter(id__gt=last_id)[:EVIDENCE_PAGE]):
        last_id = page[-1].id
        developer_ids = [d.developer_id for d in page]
        reminders: dict[int, list[Delivery]] = {}
        for reminder in deliveries.filter(
            memo=memo, kind=Delivery.Kind.REMINDER, developer_id__in=developer_ids
        ).order_by("sequence"):
            reminders.setdefault(reminder.developer_id, []).append(reminder)
        answers: dict[int, list[Answer]] = {}
        for answer in (
            Answer.objects.filter(memo=memo, developer_id__in=developer_ids)
            .select_related("api_client", "resolution")
            .order_by("created_at", "id")
        ):
            answers.setdefault(answer.developer_id, []).append(answer)
        open_cases: dict[int, set[str]] = {}
        for developer_id, kind in (
            Case.objects.filter(memo=memo, developer_id__in=developer_ids)
            .exclude(status=Case.Status.RESOLVED)
            .values_list("developer_id", "kind")
        ):
            open_cases.setdefault(developer_id, set()).add(kind)
        for delivery in page:
            yield {
                "developer": delivery.developer.external_id,
                "email": delivery.developer.email,
                "country_at_send": delivery.country,
                "reason": delivery.reason,
                "deliveries": [
                    {
                        "kind": d.kind,
                        "sequence": d.sequence,
                        "status": d.status,
                        "sent_at": _iso(d.sent_at),
                        "status_changed_at": _iso(d.status_changed_at),
                        "provider_message_id": d.provider_message_id,
                        "error": d.status_reason,
                    }
                    for d in [delivery, *reminders.get(delivery.developer_id, [])]
                ],
                "answers": [_answer_row(a) for a in answers.get(delivery.developer_id, [])],
                "standing": standing(
                    status=delivery.status,
                    answers=answers.get(delivery.developer_id, []),
                    open_cases=open_cases.get(delivery.developer_id, set()),
                    withdrawn=withdrawn,
                ),
            }


def _csv_row(record: dict[str, Any]) -> list[Any]:
    first, *reminders = record["deliveries"]
    answers = record["answers"]
    # The answer that counts: the acknowledgement if there is one, else the latest.
    final = next((a for a in answers if a["response"] == Response.ACKNOWLEDGED), answers[-1] if answers else None)
    earlier = [a for a in answers if a is not final]
    final = final or {}
    yes_no: dict[bool | None, str] = {True: "yes", False: "no"}
    return [
        record["developer"],
        record["email"],
        record["country_at_send"],
        record["reason"],
        first["status"],
        first["sent_at"],
        first["provider_message_id"],
        first["error"],
        "; ".join(f"{r['sequence']}: {r['status']} {r['sent_at'] or ''}".strip() for r in reminders),
        final.get("response", ""),
        final.get("at"),
        final.get("content_hash", ""),
        final.get("ip_address"),
        final.get("user_agent", ""),
        final.get("seconds_since_delivery"),
        yes_no.get(final.get("suspected_automation"), ""),
        "; ".join(final.get("automation_reasons", [])),
        final.get("country_claimed", ""),
        final.get("comment", ""),
        "; ".join(f"{a['response']} {a['at']}" for a in earlier),
        final.get("channel", ""),
        final.get("api_client") or "",
        record["standing"],
        final.get("statement_hash", ""),
        final.get("page_hash", ""),
    ]


def evidence_csv(memo: Memo) -> Iterator[str]:
    return csv_lines(EVIDENCE_COLUMNS, (_csv_row(r) for r in evidence_records(memo)))


def evidence_json(memo: Memo) -> Iterator[str]:
    """A JSON document streamed in pieces: the memo, then one record per recipient, the
    chain and its checkpoints, all read as of one moment (the sequencer may seal while
    a large export streams: its chain must still end at its newest checkpoint)."""
    with snapshot():
        yield from _evidence_json(memo)


def _evidence_json(memo: Memo) -> Iterator[str]:
    # The checkpoints and the keys come first, so `verify_evidence --file` checks each
    # chain record as it reads it and keeps none: public_key signs from now on,
    # public_keys are those that signed these checkpoints (more than one once the key
    # was rotated: EVIDENCE_RETIRED_KEYS).
    signed = [checkpoint_dict(c) for c in EvidenceCheckpoint.objects.filter(memo=memo).order_by("seq")]
    known = public_keys()
    head = {
        "memo": memo.slug,
        "memo_id": memo.pk,  # what the published heads name it by
        "title": memo.title,
        "content_hash": memo.content_hash,
        "effective_date": _iso(memo.effective_date),
        "ack_deadline": _iso(memo.ack_deadline),
        "exported_at": _iso(timezone.now()),
        "answers_by_channel": answers_by_channel(memo),
        "checkpoints": signed,
        "public_key": public_key(),
        "public_keys": [known[k] for k in dict.fromkeys(c["key_id"] for c in signed) if k in known],
        "approval": approval_section(memo),
        "withdrawal": withdrawal_section(memo),
        **links_section(memo),
    }
    yield json.dumps(head, ensure_ascii=False)[:-1] + ', "cases": [\n'
    for n, case in enumerate(cases_section(memo)):
        yield ("" if n == 0 else ",\n") + json.dumps(case, ensure_ascii=False)
    yield '\n], "recipients": [\n'
    for n, record in enumerate(evidence_records(memo)):
        yield ("" if n == 0 else ",\n") + json.dumps(record, ensure_ascii=False)
    # The chain the checkpoints sign: `verify_evidence --file` verifies it with nothing
    # else, `--against` compares a later database with it.
    yield '\n], "chain": [\n'
    for n, chained in enumerate(evidence_chain(memo)):
        yield ("" if n == 0 else ",\n") + json.dumps(chained, ensure_ascii=False)
    yield "\n]}\n"


def evidence_chain(memo: Memo) -> Iterator[Mapping[str, Any]]:
    """The memo's chained records, in order, as an export carries them."""
    for page in chained_pages(memo):
        yield from page
