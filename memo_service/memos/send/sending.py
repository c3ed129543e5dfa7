"""Send a batch of deliveries: claim each, render, hand to the provider, record."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any

from anymail.exceptions import AnymailInvalidAddress
from anymail.message import AnymailMessage
from anymail.utils import EmailAddress, parse_address_list
from django.core.cache import cache
from django.core.mail import get_connection
from django.utils import timezone

from memo_service.backends.base import capabilities, reports_acceptance
from memo_service.lib.db import in_ids
from memo_service.memos.answer.answers import ack_url
from memo_service.memos.compose.context import Recipient, developer_context, stored_values
from memo_service.memos.compose.emails import email_text_hash
from memo_service.memos.compose.rendering import MemoRenderer, approved_renderer, error_reason
from memo_service.memos.compose.sources import memo_content_hash
from memo_service.memos.compose.version_check import VersionCheck, version_check
from memo_service.memos.delivery_status import (
    EmailText,
    deliveries_claim,
    deliveries_record_sent,
    delivery_claim,
    delivery_record_failure,
    delivery_record_retry,
    delivery_record_skipped,
)
from memo_service.memos.evidence.approved import NotApproved
from memo_service.memos.memo_status import memo_mark_sent_if_done
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.queue import enqueue_later
from memo_service.memos.reminders import contact_copy, still_to_answer
from memo_service.memos.send.control import ControlRefused, memo_pause
from memo_service.memos.send.failures import (
    AUTH_ERRORS_BEFORE_PAUSE,
    Action,
    Decision,
    backoff_jitter,
    credentials_pause,
    failure_decision,
    http_status,
)
from memo_service.memos.send.leases import lease_release, lease_take
from memo_service.memos.send.throttle import throttle_block, throttle_take
from memo_service.memos.snapshot import traffic_of

log = logging.getLogger(__name__)
DeliveryStatus = Delivery.Status


def _auth_errors(provider: str, failed: bool) -> int:
    """Consecutive credential errors for this provider, across all workers."""
    key = f"auth-errors:{provider}"
    if not failed:
        cache.delete(key)
        return 0
    if cache.add(key, 1, 3600):
        return 1
    return cache.incr(key)


def backend_is_idempotent() -> bool:
    """Does the email backend make a repeated send of one delivery harmless?"""
    return capabilities().idempotent


# A worker process keeps the renderers of the memos it sends: compiling the templates and
# making the skeleton costs milliseconds, a task's hundred emails a few more. The key
# is the hash of what the templates say now, so an edited memo never renders stale.
_renderers: dict[tuple[int, str, bool], MemoRenderer] = {}


def renderer_for(memo: Memo, reminder: bool) -> MemoRenderer:
    """The memo's renderer, once its templates are shown to be the approved ones
    (raises NotApproved otherwise)."""
    key = (memo.pk, memo_content_hash(memo), reminder)
    if key not in _renderers:
        if len(_renderers) >= 16:
            _renderers.clear()
        _renderers[key] = approved_renderer(memo, reminder=reminder)
    return _renderers[key]


# An address that needs no quoting (ASCII, a dot-atom local part, a plain domain) and a
# name of words and single spaces: made into anymail's EmailAddress without its parser.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)
_PLAIN_NAME = re.compile(r"[\w'.-]+(?: [\w'.-]+)*")


def recipient_address(name: str, email: str) -> EmailAddress:
    """The developer's name and address (from the database, never from what a template
    saw) as anymail makes them from the text "name <address>". Its parser cost more than
    the rest of a batch call, so a plain name and address are taken apart without it."""
    if _PLAIN_ADDRESS.fullmatch(email) and (not name or _PLAIN_NAME.fullmatch(name)):
        username, domain = email.rsplit("@", 1)
        return EmailAddress(display_name=name, username=username, domain=domain)
    # Quoted, international or odd: what anymail makes of the text (a line break in a name is a space).
    text = str(EmailAddress(display_name=name.replace("\r", " ").replace("\n", " "), addr_spec=email))
    return parse_address_list([text])[0]


@dataclass(slots=True)
class Queued:
    """What a send reads of a queued Delivery. Rows, not model instances: a task loads a
    thousand, and making two models per row cost more than the rest of loading them."""

    pk: int
    memo_id: int
    kind: str
    sequence: int
    attempts: int
    not_before: dt.datetime | None
    developer: Recipient
    memo: Memo


@dataclass
class Prepared:
    delivery: Queued
    language: str
    email: Any  # emails.RenderedEmail
    to: EmailAddress
    rendered_with: dict[str, Any]  # the developer's values, kept with the email (Delivery.rendered_with)


class _Stop(Exception):
    """Nothing more goes out in this batch (throttled without a shared limiter, or paused)."""


class BatchSender:
    """Sends one task's deliveries over one connection: anymail reuses its HTTP session.

    With a backend that sends many recipients in one API call (`merge_batch_size`, e.g.
    memo_service.backends.mailgun), the rendered emails go out together (merged_message).

    A delivery is claimed (queued → sending) just before the call that sends it, never
    earlier: a worker killed while it renders leaves its rows queued for the task's
    redelivery, and only a kill while a call is on its way leaves rows whose outcome is
    unknown.
    """

    def __init__(self, connection: Any, deliveries: list[Queued]) -> None:
        self.connection = connection
        self.deliveries = deliveries
        # With an audience by traffic, the traffic templates see (one query a memo).
        self.traffic = {
            (memo.pk, dev): facts
            for memo in {d.memo_id: d.memo for d in deliveries}.values()
            for dev, facts in traffic_of(memo, [d.developer.pk for d in deliveries if d.memo_id == memo.pk]).items()
        }
        self.provider = type(connection).__module__
        self.can = capabilities(connection)
        self.merge_size = self.can.merge_batch_size
        self.renderers: dict[tuple[int, bool], MemoRenderer] = {}
        self.versions: dict[int, VersionCheck] = {}  # per memo: the versions its approver could preview
        self.later: list[int] = []  # to try again after `delay` seconds
        self.delay = 0.0
        self.paused = False
        # Deliveries left `sending` after a lost answer, for reconciliation to settle.
        self.unsettled = False
        self.reports_acceptance = reports_acceptance(connection)

    def run(self) -> None:
        pending: list[Prepared] = []
        try:
            for index, delivery in enumerate(self.deliveries):
                prepared = self.prepare(delivery)
                if prepared is None:
                    continue
                # An international address goes in a call of its own: anymail keys a
                # batch's merge data by the address as stored but sends the domain
                # IDNA-encoded, so the two would not meet.
                if self.merge_size and prepared.to.addr_spec.isascii():
                    pending.append(prepared)
                elif delivery_claim(delivery_id=delivery.pk):
                    self.send([prepared], rest=self.deliveries[index + 1 :])
            self.send_merged(pending)
        except _Stop:
            # Throttled without a shared limiter: all of the task not yet sent waits too.
            self.later += (
                Delivery.objects.filter(pk__in=[d.pk for d in self.deliveries], status=DeliveryStatus.QUEUED)
                .exclude(pk__in=self.later)
                .values_list("pk", flat=True)
            )
        if self.later and not self.paused:
            enqueue_later("memos.send_batch", self.later, countdown=self.delay)

    def prepare(self, delivery: Queued) -> Prepared | None:
        """Render one delivery; None when it is not (or no longer) to be sent."""
        if delivery.not_before and delivery.not_before > timezone.now():
            self.later.append(delivery.pk)
            self.delay = max(self.delay, (delivery.not_before - timezone.now()).total_seconds())
            return None
        reminder = delivery.kind == Delivery.Kind.REMINDER
        key = (delivery.memo_id, reminder)
        if key not in self.renderers:
            try:
                self.renderers[key] = renderer_for(delivery.memo, reminder)
            except NotApproved as exc:
                # Templates rewritten behind the approval: nothing of this memo goes out.
                log.error("send: %s", exc)
                _pause(delivery.memo, f"not sent: {exc}")
                self.paused = True
                raise _Stop from None
        developer = delivery.developer
        if (
            reminder
            and not Delivery.objects.filter(pk=delivery.pk)
            .filter(still_to_answer(delivery.memo, developer.pk))
            .exists()
        ):
            if delivery_claim(delivery_id=delivery.pk):
                delivery_record_skipped(delivery_id=delivery.pk, reason="not sent: the developer answered first")
            return None
        try:
            to = recipient_address(developer.name, developer.email)
        except AnymailInvalidAddress as exc:
            if delivery_claim(delivery_id=delivery.pk):
                delivery_record_failure(delivery_id=delivery.pk, error=f"not sent: {exc}")
            return None
        values = developer_context(developer, self.traffic.get((delivery.memo_id, developer.pk), ()))
        try:
            language, email = self.renderers[key].render(values, ack_url(delivery.memo_id, developer.pk))
        except Exception as exc:  # the admin's template: recorded, never raised
            if delivery_claim(delivery_id=delivery.pk):
                delivery_record_failure(delivery_id=delivery.pk, error=f"template error: {error_reason(exc, values)}")
            return None
        if delivery.memo_id not in self.versions:
            self.versions[delivery.memo_id] = version_check(delivery.memo)
        if unseen := self.versions[delivery.memo_id].unseen(values, language):
            # Not the text approved: nothing more of this memo goes out until someone looks.
            _pause(delivery.memo, f"not sent to developer {developer.external_id}: {unseen}")
            self.paused = True
            raise _Stop
        return Prepared(delivery, language, email, to, values)

    def send_merged(self, pending: list[Prepared]) -> None:
        # One address twice in a call would share one recipient's merge data: the
        # second goes in a call of its own.
        by_address: dict[str, Prepared] = {}
        calls: list[list[Prepared]] = []
        for prepared in pending:
            address = prepared.to.addr_spec.lower()  # the merge data's key: two stored spellings may share it
            if address in by_address:
                calls.append([prepared])
            else:
                by_address[address] = prepared
        # Emails rendered from one skeleton go out as that skeleton plus each one's values.
        groups: dict[int, list[Prepared]] = {}
        for prepared in by_address.values():
            groups.setdefault(id(prepared.email.skeleton), []).append(prepared)
        for group in groups.values():
            calls += [group[start : start + self.merge_size] for start in range(0, len(group), self.merge_size)]
        for call in calls:
            claimed = deliveries_claim(delivery_ids=[p.delivery.pk for p in call])
            if call := [p for p in call if p.delivery.pk in claimed]:
                self.send(call, rest=[])

    def send(self, group: list[Prepared], rest: list[Queued]) -> None:
        if len(group) == 1:
            first = group[0]
            message = AnymailMessage(
                subject=first.email.subject,
                body=first.email.text,
                to=[str(first.to)],  # text, for any backend
                connection=self.connection,
                # Our id, never personal data: tracking events carry it back to us.
                metadata={"delivery_id": str(first.delivery.pk)},
                tags=[memo_tag(first.delivery.memo_id)],
            )
            message.attach_alternative(first.email.html, "text/html")
        else:
            message = self.merged_message(group)
        throttle_take(self.provider)
        try:
            message.send()
        except Exception as exc:
            self.failed(exc, group, rest)
            return
        _auth_errors(self.provider, False)
        texts = {
            p.delivery.pk: EmailText(p.language, stored_values(p.rendered_with), email_text_hash(p.email))
            for p in group
        }
        deliveries_record_sent(delivery_ids=list(texts), message_id=_message_id(message), texts=texts)
        for prepared in group:
            if contact := _org_contact(prepared.delivery):
                self.send_contact_copy(prepared.delivery, contact)

    def send_contact_copy(self, delivery: Queued, contact: list[str]) -> None:
        """The organisation contact's notice of the last reminder, sent once the
        developer's own email is accepted. It carries no delivery id (its bounce is not
        the developer's) and no link; a failure is logged, the developer's email stands."""
        developer = delivery.developer
        subject, text = contact_copy(
            memo=delivery.memo, name=developer.name, external_id=developer.external_id, language=developer.language
        )
        throttle_take(self.provider)
        try:
            AnymailMessage(subject=subject, body=text, to=contact, connection=self.connection).send()
        except Exception as exc:
            log.warning(
                "delivery %s: the copy to the organisation contact was not sent: %s", delivery.pk, type(exc).__name__
            )

    def merged_message(self, group: list[Prepared]) -> AnymailMessage:
        """One message for many recipients: the skeleton once with the provider's merge
        fields and each recipient's values, or else each one's whole rendered email."""
        skeleton = group[0].email.skeleton
        merge_field = self.can.merge_field_format
        template = skeleton.merge_template(merge_field) if skeleton is not None else None
        if any(merge_field.split("{}")[0] in value for p in group for value in p.email.values):
            template = None  # a value that looks like a merge field travels inside a whole email
        if template is not None:
            (subject, html, text), merge_data = (
                template,
                {p.to.addr_spec: skeleton.merge_values(p.email.values, p.email.escaped) for p in group},
            )
        else:
            subject, html, text = (merge_field.format(name) for name in ("subject", "html", "text"))
            merge_data = {
                p.to.addr_spec: {"subject": p.email.subject, "text": p.email.text, "html": p.email.html} for p in group
            }
        message = AnymailMessage(
            subject=subject,
            body=text,
            connection=self.connection,
            merge_data=merge_data,
            # Addresses as anymail's parser makes them: a batching backend (ours) takes them as they are.
            to=[p.to for p in group],
            merge_metadata={p.to.addr_spec: {"delivery_id": str(p.delivery.pk)} for p in group},
            tags=[memo_tag(group[0].delivery.memo_id)],
        )
        message.attach_alternative(html, "text/html")
        return message

    def failed(self, exc: Exception, group: list[Prepared], rest: list[Queued]) -> None:
        """Carry out the failure policy's decision (failures.py) for a call that raised."""
        error = f"{type(exc).__name__}: {exc}"
        ids = [p.delivery.pk for p in group]
        log.warning("deliveries %s: %s (HTTP %s)", ids, type(exc).__name__, http_status(exc))
        decision = failure_decision(
            exc,
            can=self.can,
            batch_size=len(group),
            attempts=max(p.delivery.attempts for p in group) + 1,
            reports_acceptance=self.reports_acceptance,
            jitter=backoff_jitter(),
        )
        match decision.action:
            case Action.CREDENTIALS:
                self.credentials_refused(exc, group, error)
            case Action.HALVE:
                self.send_halves(group, error)
            case Action.RETRY | Action.THROTTLE:
                self.retry_later(decision, ids, error, rest)
            case Action.RECONCILE:
                # Left `sending` for reconciliation (memos/send/reconcile.py), which asks
                # once the provider's events are in.
                self.unsettled = True
            case Action.FAIL:
                for delivery_id in ids:
                    delivery_record_failure(
                        delivery_id=delivery_id, error=error, outcome_unknown=decision.outcome_unknown
                    )
        if decision.reraise:
            raise exc  # the rest stay queued; the sweeper re-enqueues them

    def credentials_refused(self, exc: Exception, group: list[Prepared], error: str) -> None:
        # Our credentials, not the recipients: they stay queued for after the fix.
        for prepared in group:
            delivery_record_retry(delivery_id=prepared.delivery.pk, error=error, not_before=timezone.now())
        if credentials_pause(_auth_errors(self.provider, True)):
            _pause_for_auth(group[0].delivery.memo, http_status(exc), error)
            self.paused = True
            raise _Stop

    def send_halves(self, group: list[Prepared], error: str) -> None:
        """A batch call refused whole for one recipient accepted nothing: halves are sent
        until each refusal is down to its own recipient."""
        halves = [group[: len(group) // 2], group[len(group) // 2 :]]
        for index, half in enumerate(halves):
            try:
                self.send(half, rest=[])
            except BaseException:
                # Stopped (throttled, paused, out of time): what is not sent goes back to queued.
                for unsent in halves[index + 1 :]:
                    for prepared in unsent:
                        delivery_record_retry(
                            delivery_id=prepared.delivery.pk,
                            error=error,
                            not_before=timezone.now() + dt.timedelta(seconds=self.delay),
                        )
                raise

    def retry_later(self, decision: Decision, ids: list[int], error: str, rest: list[Queued]) -> None:
        for delivery_id in ids:
            delivery_record_retry(
                delivery_id=delivery_id, error=error, not_before=timezone.now() + dt.timedelta(seconds=decision.wait)
            )
        self.later += ids
        self.delay = max(self.delay, decision.wait)
        if decision.action is Action.THROTTLE and not throttle_block(self.provider, decision.wait):
            self.later += [d.pk for d in rest]
            raise _Stop  # no shared limiter: the rest of the batch waits too


def delivery_send_batch(*, delivery_ids: list[int]) -> None:
    rows = list(
        Delivery.objects.filter(id__in=in_ids(delivery_ids), status=DeliveryStatus.QUEUED)
        .order_by("id")
        .values_list(
            "id",
            "memo_id",
            "kind",
            "sequence",
            "attempts",
            "not_before",
            "developer_id",
            *(
                f"developer__{name}"
                for name in ["name", "organization", "email", "external_id", "country", "language", "org_contact_email"]
            ),
        )
    )
    # Each memo read once, not once per row: a memo carries all its templates.
    memos = Memo.objects.in_bulk({row[1] for row in rows})
    deliveries = [
        Queued(row[0], row[1], row[2], row[3], row[4], row[5], developer=Recipient(*row[6:]), memo=memos[row[1]])
        for row in rows
    ]
    if not deliveries:
        return
    # Held (and renewed by this process) until every delivery it claims is settled; if
    # the process dies, the lease expires and the sweeper reconciles (memos/send/leases.py).
    lease = lease_take(memo_id=deliveries[0].memo_id, delivery_ids=[d.pk for d in deliveries])
    try:
        with get_connection() as connection:
            sender = BatchSender(connection, deliveries)
            sender.run()
    except BaseException:
        lease_release(lease_id=lease.pk, done=False)
        raise
    lease_release(lease_id=lease.pk, done=not sender.unsettled)
    for memo_id in {memo_id for memo_id, _ in sender.renderers}:
        memo_mark_sent_if_done(memo_id=memo_id)


def _pause_for_auth(memo: Memo, status: int | None, error: str) -> None:
    _pause(
        memo,
        f"the provider refused our credentials (HTTP {status}) {AUTH_ERRORS_BEFORE_PAUSE} times in a row: "
        f"check the ANYMAIL_* settings, then resume. Last answer: {error}",
    )


def _pause(memo: Memo, reason: str) -> None:
    """Pause the memo's send, saying why (audited); nothing if it is paused already."""
    try:
        memo_pause(memo=memo, by=None, reason=reason)
    except ControlRefused:
        pass  # already paused


def memo_tag(memo_id: int) -> str:
    """The provider's tag on a memo's emails: reconciliation asks for that memo's events."""
    return f"memo-{memo_id}"


def _org_contact(delivery: Queued) -> list[str]:
    """The organisation's contact, on the memo's last reminder only."""
    last = len(delivery.memo.reminder_days or [])
    contact = delivery.developer.org_contact_email
    if delivery.kind == Delivery.Kind.REMINDER and delivery.sequence == last and contact:
        return [contact]
    return []


def _message_id(message: AnymailMessage) -> str:
    status = getattr(message, "anymail_status", None)
    if status is not None and status.message_id:
        return str(status.message_id)
    return str(message.extra_headers.get("Message-ID", ""))
