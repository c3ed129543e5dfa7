"""Send a batch of deliveries: claim each, render, hand to the provider, record."""

from __future__ import annotations

import datetime as dt
import logging

from anymail.exceptions import AnymailInvalidAddress
from anymail.message import AnymailMessage
from django.core.mail import get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from memo_service.backends.base import capabilities, recipient_outcomes, reports_acceptance
from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.compose.context import developer_context, stored_values
from memo_service.memos.compose.emails import email_text_hash
from memo_service.memos.compose.rendering import MemoRenderer, error_reason
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
from memo_service.memos.send.addresses import recipient_address
from memo_service.memos.send.control import ControlRefused, memo_pause
from memo_service.memos.send.failures import (
    AUTH_ERRORS_BEFORE_PAUSE,
    MAX_DELAY_S,
    MAX_THROTTLED_ATTEMPTS,
    Action,
    Decision,
    auth_errors_count,
    backoff_jitter,
    backoff_s,
    credentials_pause,
    failure_decision,
    http_status,
)
from memo_service.memos.send.leases import lease_release, lease_take
from memo_service.memos.send.payload import batch_calls, merged_message, provider_message_id, single_message
from memo_service.memos.send.queued import Prepared, Queued, queued_deliveries
from memo_service.memos.send.quota import quota_claim, quota_free_at, quota_give_back
from memo_service.memos.send.renderers import renderer_for
from memo_service.memos.send.throttle import throttle_block, throttle_take
from memo_service.memos.snapshot import traffic_of

log = logging.getLogger(__name__)
DeliveryStatus = Delivery.Status


def backend_is_idempotent() -> bool:
    """Does the email backend make a repeated send of one delivery harmless?"""
    return capabilities().idempotent


class _BatchStopped(Exception):
    """Nothing more goes out in this batch (throttled without a shared limiter, paused, or
    the daily quota is reached)."""


class BatchSender:
    """Sends one task's deliveries over one connection: anymail reuses its HTTP session.

    With a backend that sends many recipients in one API call (`merge_batch_size`, e.g.
    memo_service.backends.mailgun), the rendered emails go out together (payload.merged_message).

    A delivery is claimed (queued → sending) just before the call that sends it, never
    earlier: a worker killed while it renders leaves its rows queued for the task's
    redelivery, and only a kill while a call is on its way leaves rows whose outcome is
    unknown.
    """

    def __init__(self, connection: BaseEmailBackend, deliveries: list[Queued]) -> None:
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
        # Where the last claim was counted, and when the quota has room again if it
        # had none for all of it (quota.py).
        self.quota_minute: int | None = None
        self.quota_free_at: dt.datetime | None = None

    def run(self) -> None:
        pending: list[Prepared] = []
        try:
            if free_at := quota_free_at(self.provider):
                # The daily quota is reached: nothing is rendered before the window moves.
                self.wait_for_quota(free_at)
            for index, delivery in enumerate(self.deliveries):
                prepared = self.prepare(delivery)
                if prepared is None:
                    continue
                # An international address goes in a call of its own: anymail keys a
                # batch's merge data by the address as stored but sends the domain
                # IDNA-encoded, so the two would not meet.
                if self.merge_size and prepared.to.addr_spec.isascii():
                    pending.append(prepared)
                else:
                    if self.claim([prepared]):
                        self.send([prepared], rest=self.deliveries[index + 1 :])
                    self.stop_at_quota()
            self.send_merged(pending)
        except _BatchStopped:
            # Throttled without a shared limiter, or the daily quota reached: all of the
            # task not yet sent waits too.
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
                raise _BatchStopped from None
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
            language, email = self.renderers[key].render(
                values, ack_url(delivery.memo_id, developer.pk, delivery.created_at)
            )
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
            raise _BatchStopped
        return Prepared(delivery, language, email, to, values)

    def send_merged(self, pending: list[Prepared]) -> None:
        for call in batch_calls(pending, self.merge_size, self.can.merge_email_limit):
            if call := self.claim(call):
                self.send(call, rest=[])
            self.stop_at_quota()

    def claim(self, call: list[Prepared]) -> list[Prepared]:
        """Claim the call's deliveries that the daily quota has room for (all of them
        without one), just before the call; those it had none for stay queued."""
        taken = quota_claim(provider=self.provider, delivery_ids=[p.delivery.pk for p in call], claim=_claim)
        self.quota_minute, self.quota_free_at = taken.minute, taken.free_at
        return [p for p in call if p.delivery.pk in taken.claimed]

    def stop_at_quota(self) -> None:
        """After a call that filled the daily quota, the rest of the task waits for it."""
        if self.quota_free_at is not None:
            self.wait_for_quota(self.quota_free_at)

    def wait_for_quota(self, free_at: dt.datetime) -> None:
        """Stop here; what is still queued comes back when the window has room, or in
        MAX_DELAY_S to look again (a task held longer would outlive Redis's visibility
        timeout and be delivered twice)."""
        self.delay = max(self.delay, min((free_at - timezone.now()).total_seconds(), MAX_DELAY_S), 1.0)
        raise _BatchStopped

    def send(self, group: list[Prepared], rest: list[Queued]) -> None:
        if len(group) == 1:
            message = single_message(group[0], self.connection)
        else:
            message = merged_message(group, self.connection, self.can.merge_fields)
        throttle_take(self.provider, len(group))
        try:
            message.send()
        except Exception as exc:
            self.failed(exc, group, rest)
            return
        auth_errors_count(self.provider, False)
        outcomes = recipient_outcomes(message)
        call_id = provider_message_id(message)
        texts: dict[int, EmailText] = {}
        message_ids: dict[int, str] = {}
        sent: list[Prepared] = []
        for p in group:
            outcome = outcomes.get(p.to.addr_spec)
            if outcome is not None and outcome.transient and p.delivery.attempts + 1 < MAX_THROTTLED_ATTEMPTS:
                # Refused for now (the provider too busy for this one): tried again later.
                retry = Decision(Action.RETRY, wait=backoff_s(p.delivery.attempts + 1, None, backoff_jitter()))
                self.retry_later(retry, [p.delivery.pk], outcome.refused, rest=[])
                quota_give_back(provider=self.provider, count=1, minute=self.quota_minute)
                continue
            if outcome is not None and outcome.refused:
                # Refused alone while the provider took the call's others.
                delivery_record_failure(delivery_id=p.delivery.pk, error=outcome.refused)
                quota_give_back(provider=self.provider, count=1, minute=self.quota_minute)
                continue
            texts[p.delivery.pk] = EmailText(p.language, stored_values(p.rendered_with), email_text_hash(p.email))
            message_ids[p.delivery.pk] = outcome.message_id if outcome is not None and outcome.message_id else call_id
            sent.append(p)
        if texts:
            # One id for the call (Mailgun's, SparkPost's), else each recipient's own.
            one_id = set(message_ids.values()) == {call_id}
            deliveries_record_sent(delivery_ids=list(texts), message_id=call_id if one_id else message_ids, texts=texts)
        for prepared in sent:
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
        if decision.action not in (Action.HALVE, Action.RECONCILE) and not decision.outcome_unknown:
            # The provider took none of them: not counted against the daily quota (the
            # halves of a split call are the same recipients, still counted once).
            quota_give_back(provider=self.provider, count=len(group), minute=self.quota_minute)
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
        if credentials_pause(auth_errors_count(self.provider, True)):
            _pause_for_auth(group[0].delivery.memo, http_status(exc), error)
            self.paused = True
            raise _BatchStopped

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
        # One time for the call: its rows are due together when the task comes back.
        not_before = timezone.now() + dt.timedelta(seconds=decision.wait)
        for delivery_id in ids:
            delivery_record_retry(delivery_id=delivery_id, error=error, not_before=not_before)
        if self.can.idempotent and decision.action is Action.RETRY and len(ids) > 1:
            # The same call again, alone: its idempotency key is made of exactly these
            # deliveries, so the provider answers it with the first call's.
            enqueue_later("memos.send_batch", ids, countdown=decision.wait)
            return
        self.later += ids
        self.delay = max(self.delay, decision.wait)
        if decision.action is Action.THROTTLE and not throttle_block(self.provider, decision.wait):
            self.later += [d.pk for d in rest]
            raise _BatchStopped  # no shared limiter: the rest of the batch waits too


def delivery_send_batch(*, delivery_ids: list[int]) -> None:
    deliveries = queued_deliveries(delivery_ids)
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


def _claim(delivery_ids: list[int]) -> set[int]:
    if len(delivery_ids) == 1:
        return set(delivery_ids) if delivery_claim(delivery_id=delivery_ids[0]) else set()
    return deliveries_claim(delivery_ids=delivery_ids)


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


def _org_contact(delivery: Queued) -> list[str]:
    """The organisation's contact, on the memo's last reminder only."""
    last = len(delivery.memo.reminder_days or [])
    contact = delivery.developer.org_contact_email
    if delivery.kind == Delivery.Kind.REMINDER and delivery.sequence == last and contact:
        return [contact]
    return []
