"""What a send task works on: its queued deliveries as rows (Queued), and each one
rendered and addressed, ready for the provider (Prepared)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from anymail.utils import EmailAddress

from memo_service.lib.db import in_ids
from memo_service.memos.compose.context import RECIPIENT_FIELDS, Recipient
from memo_service.memos.models import Delivery, Memo


@dataclass(slots=True)
class Queued:
    """What a send reads of a queued Delivery. Rows, not model instances: a task loads a
    thousand, and two model instances per row would cost more than the rest of loading
    them."""

    pk: int
    memo_id: int
    kind: str
    sequence: int
    attempts: int
    not_before: dt.datetime | None
    created_at: dt.datetime  # its link is signed at this time (answer/tokens.ack_url)
    developer: Recipient
    memo: Memo


@dataclass
class Prepared:
    delivery: Queued
    language: str
    email: Any  # emails.RenderedEmail
    to: EmailAddress
    rendered_with: dict[str, Any]  # the developer's values, kept with the email (Delivery.rendered_with)


def queued_deliveries(delivery_ids: list[int]) -> list[Queued]:
    """Those of `delivery_ids` still queued, in id order."""
    rows = list(
        Delivery.objects.filter(id__in=in_ids(delivery_ids), status=Delivery.Status.QUEUED)
        .order_by("id")
        .values_list(
            "id",
            "memo_id",
            "kind",
            "sequence",
            "attempts",
            "not_before",
            "created_at",
            "developer_id",
            *(f"developer__{name}" for name in RECIPIENT_FIELDS),
        )
    )
    # Each memo read once, not once per row: a memo carries all its templates.
    memos = Memo.objects.in_bulk({row[1] for row in rows})
    return [
        Queued(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], developer=Recipient(*row[7:]), memo=memos[row[1]]
        )
        for row in rows
    ]
