"""In-app notices: the memos a developer was sent, for the platform's console to show
until they answer (its answers come back through answers.answer_record, channel "console").

A console asks on every page load, so a developer's notices are one indexed query: the
developer by external_id, their initial deliveries, each memo, and their answers with a
dispute's resolution, joined and grouped per memo. It is written out in SQL, composed
once: the ORM would build it of six correlated subqueries, composed again on every
call. What a notice says of the memo (title, dates) and the text sent come from the
memo's compiled templates, kept per process under its frozen content hash
(answer/sent_text.py).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos.answer.answers import ANSWERS_CLOSED
from memo_service.memos.answer.sent_text import sent_memo, sent_text
from memo_service.memos.answer.tokens import ack_url, console_url
from memo_service.memos.evidence.approved import NotApproved
from memo_service.memos.models import (
    DELIVERY_HANDED_OVER,
    DELIVERY_UNCONFIRMED,
    MEMO_SHOWN,
    Answer,
    Delivery,
    DisputeResolution,
    Memo,
)

Response = Answer.Response
DeliveryStatus = Delivery.Status
# A notice for every memo whose first email was handed over or given up on: the console
# is there for the emails that bounced, failed or were never read. Not for one still
# queued or sending (a paused send holds them back), nor a cancelled one.
SHOWN_STATUSES = DELIVERY_HANDED_OVER + DELIVERY_UNCONFIRMED

log = logging.getLogger(__name__)


def _in(values: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"  # our own constants, never input


NOTICES_SQL = f"""
SELECT dl.id, dl.memo_id, m.content_hash, dl.rendered_with, dl.text_hash,
       dev.id, dev.external_id, dev.name, dev.organization, dev.email, dev.country, dev.language,
       MAX(CASE WHEN a.response = '{Response.ACKNOWLEDGED}' THEN 1 ELSE 0 END),
       MAX(CASE WHEN a.response = '{Response.DISPUTES_REGION}' THEN 1 ELSE 0 END),
       MAX(CASE WHEN a.response = '{Response.NEEDS_HELP}' THEN 1 ELSE 0 END),
       MAX(CASE WHEN a.response = '{Response.DISPUTES_REGION}' THEN a.country_claimed END),
       MAX(CASE WHEN a.response = '{Response.DISPUTES_TRAFFIC}' THEN 1 ELSE 0 END),
       MAX(r.outcome),
       MAX(CASE WHEN r.exempt THEN 1 ELSE 0 END),
       MAX(CASE WHEN a.response = '{Response.OBJECTS}' THEN 1 ELSE 0 END),
       m.status
FROM {Developer._meta.db_table} dev
JOIN {Delivery._meta.db_table} dl ON dl.developer_id = dev.id
JOIN {Memo._meta.db_table} m ON m.id = dl.memo_id
LEFT JOIN {Answer._meta.db_table} a ON a.memo_id = dl.memo_id AND a.developer_id = dl.developer_id
LEFT JOIN {DisputeResolution._meta.db_table} r ON r.answer_id = a.id
WHERE dev.external_id = %s AND dev.erased_at IS NULL AND dl.kind = '{Delivery.Kind.INITIAL}'
  AND dl.status IN {_in(SHOWN_STATUSES)} AND m.status IN {_in(MEMO_SHOWN)}
  {{open}}
GROUP BY dl.id, dl.memo_id, m.content_hash, dl.rendered_with, dl.text_hash, m.send_started_at, m.status,
         dev.id, dev.external_id, dev.name, dev.organization, dev.email, dev.country, dev.language
{{unanswered}}
ORDER BY m.send_started_at DESC NULLS LAST, dl.memo_id DESC
"""
# "unanswered": still to acknowledge (as reminders count it: a question or a dispute
# waiting is no acknowledgement), not exempted, and the memo still takes answers (its
# deadline has not passed, and it was not withdrawn or cancelled).
OPEN = f"AND (m.ack_deadline IS NULL OR m.ack_deadline >= %s) AND m.status NOT IN {_in(list(ANSWERS_CLOSED))}"
UNANSWERED = (
    f"HAVING MAX(CASE WHEN a.response = '{Response.ACKNOWLEDGED}' THEN 1 ELSE 0 END) = 0 "
    "AND MAX(CASE WHEN r.exempt THEN 1 ELSE 0 END) = 0"
)


def notices_sql(*, external_id: str, state: str = "unanswered") -> tuple[str, list[Any]]:
    if state == "all":
        return NOTICES_SQL.format(open="", unanswered=""), [external_id]
    closed_before = timezone.now() - dt.timedelta(days=settings.ACK_GRACE_DAYS)
    return (
        NOTICES_SQL.format(open=OPEN, unanswered=UNANSWERED),
        [external_id, connection.ops.adapt_datetimefield_value(closed_before)],
    )


@dataclass(frozen=True)
class NoticeRow:
    delivery: Delivery  # with its memo (id, content hash) and developer
    rendered_with: Any  # the values its text was rendered with, as stored (Delivery.rendered_with)
    text_hash: str
    acknowledged: bool
    disputed: bool
    needs_help: bool
    country_claimed: str | None
    disputed_traffic: bool
    dispute_outcome: str | None
    exempt: bool
    objected: bool
    memo_status: str


def _row(values: tuple[Any, ...]) -> NoticeRow:
    delivery_id, memo_id, content_hash, rendered_with, text_hash = values[:5]
    dev_id, external_id, name, organization, email, country, language = values[5:12]
    acknowledged, disputed, needs_help, country_claimed, disputed_traffic, outcome, exempt, objected = values[12:20]
    memo_status = values[20]
    if isinstance(rendered_with, str):  # SQLite hands JSON back as text
        rendered_with = json.loads(rendered_with)
    developer = Developer(
        id=dev_id,
        external_id=external_id,
        name=name,
        organization=organization,
        email=email,
        country=country,
        language=language,
    )
    delivery = Delivery(id=delivery_id, memo=Memo(id=memo_id, content_hash=content_hash), developer=developer)
    return NoticeRow(
        delivery=delivery,
        rendered_with=rendered_with,
        text_hash=text_hash or "",
        acknowledged=bool(acknowledged),
        disputed=bool(disputed),
        needs_help=bool(needs_help),
        country_claimed=country_claimed,
        disputed_traffic=bool(disputed_traffic),
        dispute_outcome=outcome,
        exempt=bool(exempt),
        objected=bool(objected),
        memo_status=memo_status,
    )


def notice_rows(*, external_id: str, state: str = "unanswered") -> list[NoticeRow]:
    """The developer's notices, newest first: one query."""
    sql, params = notices_sql(external_id=external_id, state=state)
    with _prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return [_row(values) for values in cursor.fetchall()]


def _prepared_cursor() -> Any:
    """connection.cursor(), but on PostgreSQL one whose psycopg cursor binds the
    parameters on the server and asks psycopg to prepare each statement (the cursor
    connection.cursor() holds binds them on the client and never prepares). It is in
    Django's wrapper as connection.cursor()'s is (query logging, error wrapping, execute
    wrappers), on Django's connection, opened if need be, without connection.cursor()'s
    once-a-request health check.

    psycopg prepares only on a connection whose `prepare_threshold` is set; Django sets
    None, for poolers that cannot carry prepared statements (PgBouncer can from 1.21,
    with `max_prepared_statements`), unless the database's OPTIONS give one
    (DATABASE_URL's `?prepare_threshold=5`). With one, the notices query is prepared on
    its first run on a connection, and PostgreSQL may then keep one generic plan for it
    rather than plan every call."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    cursor = _preparing_cursor_class()(connection.connection)
    return connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)


@functools.cache
def _preparing_cursor_class() -> type:
    from django.db.backends.postgresql.base import (
        ServerBindingCursor,  # needs psycopg: PostgreSQL only
    )

    class PreparingCursor(ServerBindingCursor):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return super().execute(query, params, prepare=True, **kwargs)  # type: ignore[misc]

    return PreparingCursor


def _state(row: NoticeRow) -> str:
    if row.acknowledged:
        return Response.ACKNOWLEDGED
    if row.disputed:
        return Response.DISPUTES_REGION
    if row.disputed_traffic:
        return Response.DISPUTES_TRAFFIC
    if row.objected:
        return Response.OBJECTS
    if row.needs_help:
        return Response.NEEDS_HELP
    return "unanswered"


def notice(row: NoticeRow, relay_by: int | None = None) -> dict[str, Any]:
    """One notice: the memo as sent to the developer, their answer so far, and for a
    client that may relay answers (`relay_by`, its id) a fresh link bound to it."""
    delivery = row.delivery
    memo = sent_memo(delivery.memo)
    # No link to a memo that takes no answers (withdrawn, cancelled): state=all lists it.
    relay_by = relay_by if row.memo_status not in ANSWERS_CLOSED else None
    link = console_url(memo.pk, delivery.developer.pk, relay_by) if relay_by is not None else None
    sent = sent_text(delivery, link or ack_url(memo.pk, delivery.developer.pk), row.rendered_with, row.text_hash)
    return {
        "memo": memo.slug,
        "memo_id": memo.pk,
        "title": memo.title,
        "language": sent.language,
        "subject": sent.subject,
        "text": sent.text,
        "content_hash": sent.text_hash,
        "effective_date": memo.effective_date,
        "ack_deadline": memo.ack_deadline,
        "state": _state(row),
        "dispute": {
            "country_claimed": row.country_claimed,
            "outcome": row.dispute_outcome,
            "exempt": row.exempt,
        }
        if row.disputed
        else None,
        "ack_url": link,
    }


def developer_notices(
    *, external_id: str, state: str = "unanswered", relay_by: int | None = None
) -> list[dict[str, Any]] | None:
    """The developer's notices, newest first; None when there is no such developer.
    Links only for a client that may relay answers (`relay_by`)."""
    rows = notice_rows(external_id=external_id, state=state)
    if not rows and not Developer.objects.filter(external_id=external_id, erased_at__isnull=True).exists():
        return None
    return [shown for row in rows if (shown := _shown(row, relay_by)) is not None]


def _shown(row: NoticeRow, relay_by: int | None) -> dict[str, Any] | None:
    """A notice, or None for a memo whose templates are not the approved ones: its page
    refuses it too (503), and the console shows the rest."""
    try:
        return notice(row, relay_by)
    except NotApproved as exc:
        log.error("notices: %s", exc)
        return None
