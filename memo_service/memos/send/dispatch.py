"""Start a send: freeze the memo, snapshot its audience as Delivery rows, enqueue batches.

Dispatch pages through the audience by developer id, one transaction per page, so
memory stays flat however large the cohort is, and each page's batches are enqueued
only once its rows are committed. Every step can be rerun: Delivery rows are unique per
(memo, developer, kind) and a worker claims a row only while it is still queued.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Case, DateTimeField, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce, Concat
from django.utils import timezone

from memo_service.backends.base import capabilities
from memo_service.developers.models import Developer
from memo_service.lib.db import statistics_refresh
from memo_service.memos.audience import audience_changes, audience_pages, audience_reasons, memo_audience
from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.compose.checks import memo_check, problems_text
from memo_service.memos.compose.context import RECIPIENT_FIELDS, Recipient, developer_context
from memo_service.memos.compose.links import check_ack_urls
from memo_service.memos.compose.rendering import approved_renderer, error_reason
from memo_service.memos.compose.sources import memo_content_hash
from memo_service.memos.compose.version_check import version_check
from memo_service.memos.evidence.approved import NotApproved
from memo_service.memos.memo_status import memo_mark_paused, memo_mark_sending, memo_mark_sent_if_done
from memo_service.memos.models import MEMO_STARTABLE, AudienceSnapshot, Delivery, Memo
from memo_service.memos.queue import enqueue_on_commit
from memo_service.memos.send.schedule import memo_schedule_failed
from memo_service.memos.snapshot import audience_snapshot, traffic_of

# Developers per transaction. Each page's commit waits for the disk, so pages are big:
# written by one INSERT … SELECT, 10,000 rows take ~0.1 s, short enough that the web
# server's writes (acknowledgements) never wait long behind one on SQLite.
PAGE_SIZE = 10_000
# Deliveries per send task: big enough to amortize the claim query and the provider
# connection, small enough that one task finishes in seconds and a crash redoes little.
BATCH_SIZE = 100
# Deliveries per send task with a batching backend (send_batch_size).
BATCHED_TASK_SIZE = 1000

# About a second of rendering, checked before the send starts, so the admin hears at once
# of a template that fails for someone; the rest of a larger audience is checked by the
# dispatch before its first email (`_check_the_rest`).
AUDIENCE_CHECK_LIMIT = 20_000


class DispatchRefused(Exception):
    pass


class AudienceChanged(DispatchRefused):
    """The audience changed since approval and the sender has not confirmed it."""

    def __init__(self, changes: dict[str, object]) -> None:
        added = ", ".join(f"{c} +{n}" for c, n in changes["added"].items()) or "none"  # type: ignore[attr-defined]
        removed = ", ".join(f"{c} -{n}" for c, n in changes["removed"].items()) or "none"  # type: ignore[attr-defined]
        super().__init__(f"the audience changed since approval (added: {added}; removed: {removed}); confirm to send")
        self.changes = changes


@dataclass
class DispatchResult:
    targeted: int
    enqueued: int


def memo_send_start(
    *, memo: Memo, by: Actor = None, accept_audience_changes: bool = False, dispatch_in_worker: bool = True
) -> None:
    """The one way a send starts (the admin, `send_memo`, beat's scheduled sends): check
    the approved memo renders for its whole audience and that its audience is what was
    approved (or the sender accepts the changes), mark it sending, and once that commits
    enqueue its dispatch for a worker. `send_memo` dispatches in its own process instead
    (`dispatch_in_worker=False`), to show progress. Rerunning it on a memo whose dispatch
    was interrupted is allowed (it resumes).
    """
    memo = Memo.objects.get(pk=memo.pk)
    if memo.status == Memo.Status.SENDING and memo.dispatched_at is None:
        if dispatch_in_worker:
            enqueue_on_commit("memos.dispatch_memo", memo.pk)
        return
    if memo.status not in MEMO_STARTABLE:
        raise DispatchRefused(f"memo {memo.slug} is {memo.status}; only an approved memo can be sent")
    checked_hash = memo_content_hash(memo)
    if checked_hash != memo.content_hash:
        raise DispatchRefused(f"memo {memo.slug} changed after it was approved; it needs a new approval")
    changes = audience_changes(memo)
    if changes["any"] and not accept_audience_changes:
        raise AudienceChanged(changes)
    problems = memo_check(memo)
    if problems:
        raise DispatchRefused(f"memo {memo.slug} does not render: {problems_text(problems)}")
    _render_for_audience(memo)
    with transaction.atomic():
        locked = Memo.objects.select_for_update().get(pk=memo.pk)
        if locked.status not in MEMO_STARTABLE:
            raise DispatchRefused(f"memo {memo.slug} was started by someone else")
        if memo_content_hash(locked) != checked_hash:
            raise DispatchRefused(f"memo {memo.slug} was edited while it was being checked; send it again")
        if changes["any"]:  # accepted: who is in now, and why, is what the deliveries say
            audience_snapshot(locked)
        memo_mark_sending(memo=memo)
        if locked.supersedes_id is not None:  # a correction: the earlier memo's open cases are its now
            enqueue_on_commit("memos.correction_started", memo.pk)
        audit_record(actor=by, action="memo.sent", obj=memo, audience_changes=changes)
        if dispatch_in_worker:
            enqueue_on_commit("memos.dispatch_memo", memo.pk)


def memos_send_scheduled() -> list[int]:
    """Start every scheduled memo whose time has come (beat, every
    SCHEDULED_SEND_CHECK_SECONDS). The schedule lives in the database, so it survives
    restarts of every process."""
    started = []
    for memo in Memo.objects.filter(status=Memo.Status.SCHEDULED, scheduled_at__lte=timezone.now()):
        try:
            # Nobody is there to confirm a changed audience: it is refused, not sent.
            memo_send_start(memo=memo, by=None)
        except DispatchRefused as exc:
            memo_schedule_failed(memo=memo, reason=str(exc))
            continue
        started.append(memo.pk)
    return started


def _render_for_audience(memo: Memo, *, first: bool = True, progress: Callable[[int], None] | None = None) -> None:
    """Render the memo for its recipients, so a template that fails for some developer's
    data fails before the send and not halfway through it: the first
    AUDIENCE_CHECK_LIMIT (`first`), or all after them. Read in pages keyed on id (a
    streaming read beside SQLite's writers ends in "database is locked"); with the
    substitution path most memos cost microseconds a developer."""
    try:
        renderer = approved_renderer(memo)
    except NotApproved as exc:
        raise DispatchRefused(f"memo {memo.slug} is not sent: {exc}") from None
    versions = version_check(memo)
    link = check_ack_urls(memo.pk)
    checked = 0
    for audience in audience_pages(memo, min(PAGE_SIZE, AUDIENCE_CHECK_LIMIT)):
        page = [Recipient(*row) for row in audience.values_list("id", *RECIPIENT_FIELDS)]
        if not first and checked + len(page) <= AUDIENCE_CHECK_LIMIT:
            checked += len(page)  # checked when the send started
            continue
        if progress and checked > AUDIENCE_CHECK_LIMIT:
            progress(checked - AUDIENCE_CHECK_LIMIT)
        traffic = traffic_of(memo, [developer.pk for developer in page])
        for developer in page:
            checked += 1
            if first and checked > AUDIENCE_CHECK_LIMIT:
                return  # the rest is the dispatch's to check
            if not first and checked <= AUDIENCE_CHECK_LIMIT:
                continue  # checked when the send started
            values = developer_context(developer, traffic.get(developer.pk, ()))
            try:
                language, _ = renderer.render(values, link(developer.pk))
            except Exception as exc:  # the admin's template, reported with whom it failed for
                raise DispatchRefused(
                    f"memo {memo.slug} does not render for developer {developer.external_id}: "
                    f"{error_reason(exc, values)}"
                ) from None
            if unseen := versions.unseen(values, language):
                raise DispatchRefused(f"memo {memo.slug} is not sent to developer {developer.external_id}: {unseen}")


def _check_the_rest(memo: Memo) -> bool:
    """Before a large memo's first email: the audience past what memo_send_start checked.
    A failure pauses the memo with the reason, before anyone is sent anything."""
    if Delivery.objects.filter(memo=memo).exists():
        return True  # checked before its first page; this is a dispatch resumed
    rest = max(memo_audience(memo).count() - AUDIENCE_CHECK_LIMIT, 0)
    Memo.objects.filter(pk=memo.pk).update(audience_checked=0, audience_to_check=rest)

    def progress(checked: int) -> None:  # for the Send page's progress line
        Memo.objects.filter(pk=memo.pk).update(audience_checked=checked)

    try:
        _render_for_audience(memo, first=False, progress=progress)
    except DispatchRefused as exc:
        memo_mark_paused(memo=memo, reason=f"not sent: {exc}")
        audit_record(actor=None, action="memo.check_failed", obj=memo, reason=str(exc))
        return False
    return True


def send_batch_size() -> int:
    """Deliveries per send task: BATCH_SIZE, or with a backend that hands many recipients
    to the provider in one API call (`merge_batch_size`), BATCHED_TASK_SIZE or one call's
    worth where a call takes more (Mailgun, SendGrid, Brevo: one call per task; SES's 50
    a call: twenty). Per-task costs (the task's broker messages, its lease, loading its
    rows, a connection) then weigh a tenth as much; the price is that a worker killed
    while it waits for an answer leaves that call's deliveries for the sweeper to settle,
    and a task redelivered after a crash redoes the rest of its calls (each claimed just
    before it goes: nobody twice)."""
    batch = capabilities().merge_batch_size
    return max(BATCHED_TASK_SIZE, batch) if batch else BATCH_SIZE


def send_batches_enqueue(delivery_ids: list[int]) -> None:
    """Enqueue send tasks for these deliveries once the transaction commits (a rollback
    enqueues nothing)."""
    size = send_batch_size()
    for start in range(0, len(delivery_ids), size):
        enqueue_on_commit("memos.send_batch", delivery_ids[start : start + size])


def memo_dispatch(*, memo_id: int, progress: Callable[[int], None] | None = None) -> DispatchResult:
    """Create the Delivery rows page by page and enqueue their send batches."""
    memo = Memo.objects.get(pk=memo_id)
    if memo.status != Memo.Status.SENDING:
        raise DispatchRefused(f"memo {memo.slug} is {memo.status}, not sending")
    if not _check_the_rest(memo):
        return DispatchResult(targeted=0, enqueued=0)
    enqueued = targeted = 0
    for audience in audience_pages(memo, PAGE_SIZE):
        if not (page := list(audience.values_list("id", flat=True))):
            continue
        if not Memo.objects.filter(pk=memo.pk, status=Memo.Status.SENDING).exists():
            return DispatchResult(targeted=targeted, enqueued=enqueued)  # paused or cancelled: resume redoes it
        first_id, last_id = page[0], page[-1]
        with transaction.atomic():
            deliveries_create(memo=memo, developers=audience)
            queued = list(
                Delivery.objects.filter(
                    memo_id=memo.pk,
                    kind=Delivery.Kind.INITIAL,
                    status=Delivery.Status.QUEUED,
                    developer_id__gte=first_id,
                    developer_id__lte=last_id,
                )
                .order_by("id")
                .values_list("id", flat=True)
            )
            send_batches_enqueue(queued)
        enqueued += len(queued)
        targeted += len(page)
        if progress:
            progress(targeted)
    statistics_refresh(Delivery)
    Memo.objects.filter(pk=memo.pk, dispatched_at__isnull=True).update(dispatched_at=timezone.now())
    memo_mark_sent_if_done(memo_id=memo.pk)
    return DispatchResult(targeted=targeted, enqueued=enqueued)


def deliveries_create(*, memo: Memo, developers: QuerySet[Developer]) -> None:
    """One initial Delivery per developer of `developers` who has none yet, written by
    the database itself (INSERT … SELECT): no row travels through Python, so a page costs
    milliseconds, not a model instance per developer. A hard-bounced or complained
    address is not mailed again: its Delivery is failed at once and says why."""
    now = timezone.now()
    reasons = audience_reasons(memo)
    # Why each is in: by the account's country, the rules say it (the snapshot would say
    # the same, at the cost of a lookup a row); by traffic, as the snapshot of the approved
    # (or accepted) audience says, the rules' own reason for anyone who joined since.
    by_country = Case(*[When(country=code, then=Value(text)) for code, text in reasons.items()], default=Value(""))
    reason: Case | Coalesce = by_country
    if memo.audience_basis != Memo.Basis.ACCOUNT:
        kept = AudienceSnapshot.objects.filter(memo_id=memo.pk, developer_id=OuterRef("id")).values("reason")[:1]
        reason = Coalesce(Subquery(kept), by_country)
    ok = Q(email_status=Developer.EmailStatus.OK.value)
    suppressed = Concat(Value("suppressed: the address "), F("email_status"), Value(" on an earlier email"))
    # Each column with its value, an expression over the developer's row: the INSERT's
    # column list and its SELECT are both made from this.
    row = (
        ("memo_id", Value(memo.pk)),
        ("developer_id", F("id")),
        ("kind", Value(Delivery.Kind.INITIAL.value)),
        ("sequence", Value(0)),
        (
            "status",
            Case(When(ok, then=Value(Delivery.Status.QUEUED.value)), default=Value(Delivery.Status.FAILED.value)),
        ),
        ("language", F("language")),
        ("country", F("country")),
        ("reason", reason),
        ("provider_message_id", Value("")),
        ("attempts", Value(0)),
        ("not_before", Value(None, output_field=DateTimeField())),
        ("status_reason", Case(When(ok, then=Value("")), default=suppressed)),
        ("created_at", Value(now, output_field=DateTimeField())),
        ("sent_at", Value(None, output_field=DateTimeField())),
        ("status_changed_at", Case(When(ok, then=Value(None)), default=Value(now), output_field=DateTimeField())),
    )
    columns = [column for column, _ in row]
    # Every column an expression, so the SELECT lists them in this order.
    rows = developers.order_by().values_list(*(value for _, value in row))
    select, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        # The SELECT always has a WHERE, so SQLite reads ON CONFLICT as the upsert clause.
        cursor.execute(
            f"INSERT INTO {Delivery._meta.db_table} ({', '.join(columns)}) {select} ON CONFLICT DO NOTHING", params
        )
