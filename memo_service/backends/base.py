"""What an email backend can tell us beyond sending, declared once.

A backend class that also derives from `ReportsAcceptance` can say which of our
deliveries its provider accepted (memos/reconcile.py asks it after a worker died
mid-call); reconcile.py is the one place that reads it.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple


class Acceptance(NamedTuple):
    message_id: str  # as the send call's answer gives it
    at: dt.datetime


class ReportsAcceptance:
    def accepted_delivery_ids(
        self, *, tag: str, delivery_ids: set[int], begin: dt.datetime, end: dt.datetime
    ) -> dict[int, Acceptance]:
        """{delivery id: its message id and when the provider took it} for each of
        `delivery_ids` the provider accepted between `begin` and `end` in a message
        tagged `tag`.
        Raises when the provider cannot be asked (the caller tries again later)."""
        raise NotImplementedError


def reports_acceptance(backend: object) -> bool:
    """Can this backend (an instance or a class) say what its provider accepted?"""
    return isinstance(backend, ReportsAcceptance) or (
        isinstance(backend, type) and issubclass(backend, ReportsAcceptance)
    )
