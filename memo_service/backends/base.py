"""What an email backend can tell us beyond sending, declared once.

A backend class that also derives from `ReportsAcceptance` can say which of our
deliveries its provider accepted (memos/reconcile.py asks it after a worker died
mid-call); reconcile.py is the one place that reads it.
"""

from __future__ import annotations

import datetime as dt


class ReportsAcceptance:
    def accepted_delivery_ids(
        self, *, tag: str, delivery_ids: set[int], begin: dt.datetime, end: dt.datetime
    ) -> dict[int, str]:
        """{delivery id: the provider's message id} for each of `delivery_ids` the
        provider accepted between `begin` and `end` in a message tagged `tag`.
        Raises when the provider cannot be asked (the caller tries again later)."""
        raise NotImplementedError


def reports_acceptance(backend: object) -> bool:
    """Can this backend (an instance or a class) say what its provider accepted?"""
    return isinstance(backend, ReportsAcceptance) or (
        isinstance(backend, type) and issubclass(backend, ReportsAcceptance)
    )
