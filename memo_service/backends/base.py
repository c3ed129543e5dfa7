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

from anymail.utils import EmailAddress, force_non_lazy_dict, parse_address_list
from django.conf import settings
from django.utils.module_loading import import_string


class MergeField(NamedTuple):
    """A provider's mark for a merge field, around the field's name: Mailgun's
    ("%recipient.", "%"), Mustache's unescaped ("{{{", "}}}"). `reserved`: what the
    provider reads as its markup anywhere in the text (Mustache: any "{{"), if more than
    `before`; a memo whose own text has it travels as whole emails."""

    before: str
    after: str
    reserved: str = ""

    def format(self, name: str) -> str:
        return f"{self.before}{name}{self.after}"


class MergeFields(NamedTuple):
    subject: MergeField
    html: MergeField
    text: MergeField

    @classmethod
    def same(cls, field: MergeField) -> MergeFields:
        return cls(field, field, field)


# A recipient's status (anymail's AnymailRecipientStatus.status) that means the provider
# refused that recipient while it took the call's others.
REFUSED = frozenset({"rejected", "failed", "invalid"})


class TransientRefusal(str):
    """A reason in `message.anymail_refusals` for a recipient the provider refused only
    for now (SES's ACCOUNT_THROTTLED for one entry): tried again later, not failed."""


class Outcome(NamedTuple):
    """What the provider said of one recipient of a call it took."""

    message_id: str  # the recipient's own id, or else the call's
    refused: str  # why the provider refused this recipient; "" if it took the email
    transient: bool = False  # refused for now (TransientRefusal): to be tried again


def recipient_outcomes(message: Any) -> dict[str, Outcome]:
    """{address: Outcome} for a sent message, from anymail's per-recipient status;
    the reason for a refusal is what our backend found in the provider's answer
    (`message.anymail_refusals`, {address: reason}), else anymail's status."""
    status = getattr(message, "anymail_status", None)
    if status is None:
        return {}  # not an anymail backend
    reasons: dict[str, str] = getattr(message, "anymail_refusals", None) or {}
    call_id = str(status.message_id) if isinstance(status.message_id, str) else ""
    outcomes = {}
    for address, recipient in (status.recipients or {}).items():
        refused = recipient.status in REFUSED
        reason = reasons.get(address) or f"refused by the provider ({recipient.status})"
        outcomes[address] = Outcome(
            str(recipient.message_id or call_id),
            reason if refused else "",
            refused and isinstance(reason, TransientRefusal),
        )
    return outcomes


class Capabilities:
    """Mixed into our backends (memo_service/backends/); class attributes, no state."""

    # A repeated send of one delivery is deduplicated by the provider (an idempotency
    # key): a lost answer or a dead worker's call is simply sent again.
    idempotent: ClassVar[bool] = False
    # How long the provider keeps an idempotency key (None: as long as we could ask
    # again). A call repeated after that would be a second email: it is reconciled or
    # marked unknown instead (memos/send/reconcile.py).
    idempotency_window: ClassVar[dt.timedelta | None] = None
    # Recipients the provider takes in one batch call (0: one call per email); a send
    # task carries at least that many deliveries.
    merge_batch_size: ClassVar[int] = 0
    # How a batch call marks a per-recipient value in the subject, the HTML and the text,
    # each inserted as it is (never escaped by the provider: our values come escaped for
    # HTML already). None: the provider takes each recipient's whole email in one call
    # (a message per recipient), and the backend fills it from the merge data's
    # "subject", "html" and "text".
    merge_fields: ClassVar[MergeFields | None] = None
    # The most bytes (UTF-8) of one recipient's whole email a batch call carries in its merge
    # data (0: no limit); a bigger one goes in a call of its own (SendGrid caps a
    # personalization's substitutions).
    merge_email_limit: ClassVar[int] = 0

    @staticmethod
    def throttled(error: Exception) -> bool:
        """Does the provider say "too fast" in an answer other than HTTP 429 (SES's
        Throttling, for one)? It is then waited out as a 429 is."""
        return False

    @staticmethod
    def refuses_a_recipient(error: Exception) -> bool:
        """Was a batch call refused whole for one recipient it will not take? (It is
        then halved until the refusal is down to that recipient.)"""
        return False


def _addresses(value: Any) -> list[EmailAddress]:
    """The `to` list: anymail's own EmailAddress objects (send/addresses.py makes them as
    its parser would) taken as they are; anything else parsed as anymail does."""
    if all(isinstance(item, EmailAddress) for item in value):
        return list(value)
    return parse_address_list(value, field="to")


def _plain_dicts(value: dict[str, Any]) -> dict[str, Any]:
    """Merge data whose values are all plain strings, as it is; anything else as anymail
    makes it (a copy, lazy strings made plain)."""
    if all(type(values) is dict and all(type(v) is str for v in values.values()) for values in value.values()):
        return value
    return force_non_lazy_dict(value)


_OURS = {"to": _addresses, "merge_data": _plain_dicts, "merge_metadata": _plain_dicts}


class TakesOurValues:
    """Mixed into a provider's payload, before anymail's (`class P(TakesOurValues,
    anymail's P)`): a batch's recipients and merge data as send/payload.py makes them are
    taken as they are. anymail re-parses every address and copies every merge value of a
    message: at 1,000 recipients that was a quarter of building a call. Anything else
    goes through anymail's own conversion, so the request is the same either way
    (tests/test_fast_paths.py, tests/test_sending.py)."""

    base_message_attrs: ClassVar[tuple[Any, ...]]
    anymail_message_attrs: ClassVar[tuple[Any, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("base_message_attrs", "anymail_message_attrs"):
            attrs = getattr(cls, name)
            setattr(cls, name, tuple((a, combiner, _OURS.get(a, convert)) for a, combiner, convert in attrs))


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
