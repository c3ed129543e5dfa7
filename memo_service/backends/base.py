"""What an email backend can do beyond sending, declared once.

As anymail's base classes mark the hooks a provider's backend fills in, `Capabilities`
declares what ours can do, with the answer for any other anymail backend as its
defaults; `capabilities()` is the one place that reads it. A backend class that also
derives from `ReportsAcceptance` can say which of our deliveries its provider accepted
(memos/send/reconcile.py asks it after a worker died mid-call).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, NamedTuple

from django.conf import settings
from django.utils.module_loading import import_string


class Capabilities:
    """Mixed into our backends (memo_service/backends/); class attributes, no state."""

    # A repeated send of one delivery is deduplicated by the provider (an idempotency
    # key): a lost answer or a dead worker's call is simply sent again.
    idempotent: ClassVar[bool] = False
    # Recipients the provider takes in one batch call (0: one call per email); a send
    # task carries that many deliveries.
    merge_batch_size: ClassVar[int] = 0
    # How a batch call marks a per-recipient value in subject and bodies ("{}": the key).
    merge_field_format: ClassVar[str] = ""

    @staticmethod
    def refuses_a_recipient(error: Exception) -> bool:
        """Was a batch call refused whole for one recipient it will not take? (It is
        then halved until the refusal is down to that recipient.)"""
        return False


def capabilities(backend: Any = None) -> type[Capabilities]:
    """What `backend` (an instance or a class; by default settings.EMAIL_BACKEND) can do:
    its own declaration, or none of it for any other backend."""
    if backend is None:
        backend = import_string(settings.EMAIL_BACKEND)
    cls = backend if isinstance(backend, type) else type(backend)
    return cls if issubclass(cls, Capabilities) else Capabilities


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
