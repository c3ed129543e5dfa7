"""The funnel of a memo: targeted → sent → delivered → acknowledged, per country.

A developer whose email never reached the provider (still queued, failed, cancelled,
its outcome unknown) and who has not answered is "not sent", never "not answered": the
dashboard counts and lists the two apart, and its response rate is of those sent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any, cast

from django.db.models import Count, Exists, OuterRef, Q, Subquery
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone

from memo_service.lib.csv_export import csv_lines
from memo_service.memos.evidence.export import EVIDENCE_PAGE, answers_by_channel
from memo_service.memos.models import (
    DELIVERY_ARRIVED,
    DELIVERY_HANDED_OVER,
    DELIVERY_PENDING,
    DELIVERY_UNCONFIRMED,
    MEMO_FINISHED,
    MEMO_STARTED,
    Answer,
    Delivery,
    Memo,
)
from memo_service.memos.reminders import memo_awaiting_answer
from memo_service.memos.send.quota import provider_of_settings, quota_free_at

DeliveryStatus = Delivery.Status
# Handed to the provider: every status a provider's acceptance can lead to.
FUNNEL_COUNTS = {
    "targeted": Q(),
    "sent": Q(status__in=DELIVERY_HANDED_OVER),
    # A complaint can only come from a mailbox the message reached.
    "delivered": Q(status__in=DELIVERY_ARRIVED),
    "bounced": Q(status=DeliveryStatus.BOUNCED),
    "failed": Q(status=DeliveryStatus.FAILED),
    "outcome_unknown": Q(status=DeliveryStatus.OUTCOME_UNKNOWN),
    "pending": Q(status__in=DELIVERY_PENDING),
    "cancelled": Q(status=DeliveryStatus.CANCELLED),
}
# Of a memo's initial delivery: the provider took it (those without are "not sent").
HANDED_OVER = Q(status__in=DELIVERY_HANDED_OVER)
Response = Answer.Response
ANSWER_COUNTS = [
    "acknowledged",
    "acknowledged_suspected",
    "disputed",
    "needs_help",
    "objects",
    "exempt",
]
FIELDS = [*FUNNEL_COUNTS, *ANSWER_COUNTS]


def _answer_counts(memo: Memo) -> dict[str, dict[str, int]]:
    """Per country: developers who acknowledged (and of them, suspected automated ones),
    who disputed their region, asked for help or objected without acknowledging, and who
    were exempted after a dispute."""
    acked = Answer.objects.filter(memo=memo, developer=OuterRef("developer"), response=Response.ACKNOWLEDGED)
    country_at_send = Delivery.objects.filter(
        memo=memo, developer=OuterRef("developer"), kind=Delivery.Kind.INITIAL
    ).values("country")[:1]
    rows = (
        Answer.objects.filter(memo=memo)
        .annotate(has_ack=Exists(acked), country_at_send=Subquery(country_at_send))
        .values("country_at_send")
        .annotate(
            acknowledged=Count("id", filter=Q(response=Response.ACKNOWLEDGED)),
            acknowledged_suspected=Count("id", filter=Q(response=Response.ACKNOWLEDGED, suspected_automation=True)),
            disputed=Count(
                "id", filter=Q(response__in=(Response.DISPUTES_REGION, Response.DISPUTES_TRAFFIC), has_ack=False)
            ),
            needs_help=Count("id", filter=Q(response=Response.NEEDS_HELP, has_ack=False)),
            # Spelled as a mapping: "objects" is also the name of a model's manager.
            **{"objects": Count("id", filter=Q(response=Response.OBJECTS, has_ack=False))},
            exempt=Count("id", filter=Q(resolution__exempt=True)),
        )
    )
    # values() rows are plain dicts, reshaped here; their TypedDict type allows no pop().
    return {row.pop("country_at_send") or "": row for row in cast(Iterable[dict[str, Any]], rows)}


def memo_funnel(memo: Memo) -> dict[str, Any]:
    """Totals and per-country (the country at send) counts of the memo's initial
    deliveries and of its answers."""
    rows = (
        Delivery.objects.filter(memo=memo, kind=Delivery.Kind.INITIAL)
        .values("country")
        .annotate(**{name: Count("id", filter=q) for name, q in FUNNEL_COUNTS.items()})
    )
    by_country: dict[str, dict[str, int]] = {}
    for row in cast(Iterable[dict[str, Any]], rows):  # values() rows: plain dicts, reshaped here
        country = row.pop("country")
        by_country[country] = {**row, **dict.fromkeys(ANSWER_COUNTS, 0)}
    for country, counts in _answer_counts(memo).items():
        by_country.setdefault(country, {**dict.fromkeys(FUNNEL_COUNTS, 0), **dict.fromkeys(ANSWER_COUNTS, 0)})
        by_country[country].update(counts)
    totals = {name: sum(c[name] for c in by_country.values()) for name in FIELDS}
    return {
        "memo": memo.slug,
        "status": memo.status,
        "content_hash": memo.content_hash,
        **totals,
        "by_country": dict(sorted(by_country.items(), key=lambda kv: (-kv[1]["targeted"], kv[0]))),
        "answers_by_channel": answers_by_channel(memo),
    }


# --- live progress and the dashboard ----------------------------------------------------

# The dashboard's columns: the funnel's names, and the words its readers use.
DASHBOARD_COLUMNS = {
    "targeted": "targeted",
    "sent": "sent",
    "delivered": "delivered",
    "bounced": "bounced",
    "failed": "failed",
    "cancelled": "never sent (cancelled)",
    "acknowledged": "acknowledged",
    "acknowledged_suspected": "of which possibly automated",
    "disputed": "say their region is wrong",
    "needs_help": "asked for help",
    "objects": "object",
    "not_answered": "not answered yet",
    "not_sent": "not sent, no answer",
    "answered": "answered (response rate of those sent)",
}
# Computed per row by dashboard_rows, not read from the funnel.
DASHBOARD_OWN = ("not_answered", "not_sent", "answered")
UNANSWERED_PAGE = 50  # developers per page of the dashboard's "not answered yet" list


def dashboard_rows(memo: Memo, funnel: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The funnel's rows as the dashboard shows them, "all" first: who still owes an
    answer (reminders.still_to_answer), apart by whether their email was sent, and the
    response rate: those who no longer owe one, of those targeted less the not sent."""
    awaiting: dict[str, dict[str, int]] = {}
    rows_awaiting = (
        memo_awaiting_answer(memo)
        .order_by()
        .values("country")
        .annotate(not_answered=Count("id", filter=HANDED_OVER), not_sent=Count("id", filter=~HANDED_OVER))
    )
    for r in rows_awaiting:
        awaiting[r["country"]] = {"not_answered": r["not_answered"], "not_sent": r["not_sent"]}
    nobody = {"not_answered": 0, "not_sent": 0}

    def cells(row: dict[str, Any], waiting: dict[str, int]) -> list[str]:
        answered = row["targeted"] - waiting["not_answered"] - waiting["not_sent"]
        reached = row["targeted"] - waiting["not_sent"]
        rate = f"{answered} ({answered * 100 // reached} %)" if reached else "0"
        own = {**waiting, "answered": rate}
        return [str(own[key] if key in DASHBOARD_OWN else row[key]) for key in DASHBOARD_COLUMNS]

    total = {key: sum(w[key] for w in awaiting.values()) for key in nobody}
    rows = [("all", cells(funnel, total))]
    rows += [(code or "?", cells(row, awaiting.get(code, nobody))) for code, row in funnel["by_country"].items()]
    return rows


def unanswered_rows(memo: Memo, *, sent: bool | None = True) -> Any:
    """Who has not answered yet, with what became of their email: whose email the
    provider took (the dashboard's "not answered yet"), whose it never did (`sent=False`,
    its "not sent"), or both (None: the CSV export, which says which)."""
    awaiting = memo_awaiting_answer(memo)
    if sent is not None:
        awaiting = awaiting.filter(HANDED_OVER if sent else ~HANDED_OVER)
    return awaiting.select_related("developer").only(
        "id",
        "status",
        "country",
        "developer__external_id",
        "developer__name",
        "developer__email",
        "developer__email_status",
    )


def unanswered_csv(memo: Memo) -> Iterator[str]:
    def rows() -> Iterator[list[Any]]:
        last_id = 0
        while page := list(unanswered_rows(memo, sent=None).filter(developer_id__gt=last_id)[:EVIDENCE_PAGE]):
            last_id = page[-1].developer_id
            for d in page:
                yield [
                    d.developer.external_id,
                    d.developer.name,
                    d.developer.email,
                    d.country,
                    d.status,
                    d.developer.email_status,
                ]

    return csv_lines(
        ["external_id", "name", "email", "country_at_send", "email_status_of_memo", "address_status"], rows()
    )


def memo_progress(memo: Memo) -> dict[str, Any]:
    """How far the send is: queued (not yet handed over), sent, failed, delivered,
    cancelled (never sent: the send was cancelled), and a line that says it in words."""
    counts = Delivery.objects.filter(memo=memo, kind=Delivery.Kind.INITIAL).aggregate(
        total=Count("id"),
        queued=Count("id", filter=Q(status__in=DELIVERY_PENDING)),
        sent=Count("id", filter=Q(status__in=DELIVERY_HANDED_OVER)),
        delivered=Count("id", filter=Q(status__in=DELIVERY_ARRIVED)),
        failed=Count("id", filter=Q(status__in=DELIVERY_UNCONFIRMED)),
        cancelled=Count("id", filter=Q(status=DeliveryStatus.CANCELLED)),
    )
    total = counts["total"]
    done = total - counts["queued"]
    counts["percent"] = 100 if total and done == total and memo.dispatched_at else (done * 100 // total if total else 0)
    if _checking(memo, total):  # the bar shows the check first, then the send
        counts["percent"] = memo.audience_checked * 100 // memo.audience_to_check
    counts["status"] = memo.status
    counts["finished"] = memo.status in MEMO_FINISHED or counts["percent"] == 100
    # Not a pause anyone resumes: the send goes on by itself once the window has room.
    free_at = quota_free_at(provider_of_settings()) if memo.status == Memo.Status.SENDING and counts["queued"] else None
    counts["quota_until"] = free_at.isoformat() if free_at else None
    counts["summary"] = _progress_summary(memo, counts)
    if free_at:
        counts["summary"] = (
            f"Paused for the provider's daily quota until {_utc_minute(free_at)}, {counts['queued']:,} to go. "
            + counts["summary"]
        )
    return counts


def _utc_minute(when: dt.datetime) -> str:
    """14:05 UTC (rounded up: nothing goes before it), with the day when it is not today."""
    when = when.astimezone(dt.UTC)
    if when.second or when.microsecond:
        when = when.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    today = timezone.now().astimezone(dt.UTC).date()
    return f"{when:%H:%M} UTC" if when.date() == today else f"{when:%-d %b %H:%M} UTC"


def _checking(memo: Memo, queued_so_far: int) -> bool:
    """The dispatch is checking a large audience before its first email (dispatch.py)."""
    return bool(
        memo.dispatched_at is None and memo.status in MEMO_STARTED and not queued_so_far and memo.audience_to_check
    )


def _progress_summary(memo: Memo, c: dict[str, Any]) -> str:
    if memo.status == Memo.Status.WITHDRAWN:
        return (
            f"Withdrawn{f' on {memo.withdrawn_at:%Y-%m-%d}' if memo.withdrawn_at else ''}: {c['sent']:,} of "
            f"{c['total']:,} were sent before the withdrawal, {c['cancelled']:,} never will be"
            + (f", {c['failed']:,} failed" if c["failed"] else "")
            + "."
        )
    if memo.status == Memo.Status.CANCELLED:
        return (
            f"Cancelled: {c['sent']:,} of {c['total']:,} were sent before the cancel, "
            f"{c['cancelled']:,} never will be" + (f", {c['failed']:,} failed" if c["failed"] else "") + "."
        )
    if _checking(memo, c["total"]):
        return (
            "Checking, before the first email, that the memo renders as approved for each developer: "
            f"{memo.audience_checked:,} of {memo.audience_to_check:,} more."
        )
    if memo.dispatched_at is None and memo.status in MEMO_STARTED:
        # Between the confirmation and the end of dispatch the total is still growing.
        return f"Preparing the send: {c['total']:,} emails queued so far."
    prefix = "Paused: " if memo.status == Memo.Status.PAUSED else ""
    return (
        f"{prefix}{c['percent']} %: sent {c['sent']:,}, delivered {c['delivered']:,}, failed {c['failed']:,}, "
        f"waiting {c['queued']:,}, of {c['total']:,}."
    )


def ack_chart_svg(memo: Memo, width: int = 720, height: int = 260) -> str:
    """Acknowledgements over time against the deadline, as inline SVG (no external assets)."""
    # The time elapsed since the send, not the whole way to a deadline months away (the
    # first days would be a sliver); a deadline further on is marked at the right edge.
    start = memo.send_started_at or memo.approved_at or memo.created_at
    now = timezone.now()
    end = max(now, start + dt.timedelta(hours=1))  # an hour at least: the first answers have room
    # Steps per hour, per minute in the first two days (an hour would be a tenth of the chart).
    trunc = TruncMinute if end - start < dt.timedelta(days=2) else TruncHour
    hours = (
        Answer.objects.filter(memo=memo, response=Response.ACKNOWLEDGED)
        .annotate(hour=trunc("created_at"))
        .values("hour")
        .annotate(n=Count("id"))
        .order_by("hour")
    )
    targeted = Delivery.objects.filter(memo=memo, kind=Delivery.Kind.INITIAL).count() or 1
    pad, span = 40, max((end - start).total_seconds(), 1)

    def x(t: Any) -> float:
        return pad + (width - 2 * pad) * max(0.0, (t - start).total_seconds()) / span

    def y(n: int) -> float:
        return height - pad - (height - 2 * pad) * n / targeted

    points, total = [f"{x(start):.1f},{y(0):.1f}"], 0
    for row in hours:
        points.append(f"{x(row['hour']):.1f},{y(total):.1f}")
        total += row["n"]
        points.append(f"{x(row['hour']):.1f},{y(total):.1f}")
    points.append(f"{x(min(now, end)):.1f},{y(total):.1f}")
    deadline = ""
    if memo.ack_deadline:
        ahead = memo.ack_deadline > end
        dx = width - pad if ahead else x(memo.ack_deadline)
        label = f"deadline {memo.ack_deadline:%Y-%m-%d}" + (
            f" (in {(memo.ack_deadline - now).days} days) →" if ahead and memo.ack_deadline > now else ""
        )
        deadline = (
            f'<line x1="{dx:.1f}" y1="{pad}" x2="{dx:.1f}" y2="{height - pad}" stroke="#cf222e" '
            f'stroke-dasharray="{"2 6" if ahead else "4 3"}"/>'
            f'<text x="{dx - 4:.1f}" y="{pad - 6}" text-anchor="end" font-size="12" fill="#cf222e" '
            f'id="chart-deadline">{label}</text>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="acknowledgements over time" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" style="background:#fff;border:1px solid #ddd">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>'
        f'<text x="{pad}" y="{height - 12}" font-size="12">{start:%Y-%m-%d %H:%M}</text>'
        f'<text x="{width - pad}" y="{height - 12}" font-size="12" text-anchor="end">{"now" if end == now else f"{end:%Y-%m-%d %H:%M}"}</text>'
        f'<text x="{pad - 6}" y="{pad + 4}" font-size="12" text-anchor="end">{targeted}</text>'
        f'<text x="{pad - 6}" y="{height - pad}" font-size="12" text-anchor="end">0</text>'
        f'<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{" ".join(points)}"/>'
        f'{deadline}<text x="{pad + 6}" y="{pad - 6}" font-size="12">{total} acknowledged of {targeted}</text>'
        "</svg>"
    )


def memo_outcome_unknown(memo: Memo) -> list[tuple[str, int]]:
    """The memo's deliveries whose outcome nobody can know, counted per reason."""
    return list(
        Delivery.objects.filter(memo=memo, status=DeliveryStatus.OUTCOME_UNKNOWN)
        .values_list("status_reason")
        .annotate(n=Count("id"))
        .order_by("-n")
    )
