"""Settle the deliveries of an expired lease: ask the provider instead of guessing.

A lease expires when the worker process holding it died (with its machine, or alone),
or when its task stopped on an error after claiming, or after a call whose answer was
lost. Its deliveries still `queued` are enqueued again; those left `sending` may or may
not have reached the provider:

- a backend that sends with an idempotency key (memo_service.backends.resend): sent
  again, harmlessly;
- a backend that can say what its provider accepted (backends.base.ReportsAcceptance,
  e.g. memo_service.backends.mailgun through Mailgun's Logs API, or its events API on an
  account without it): those the provider
  accepted are recorded sent, the others are sent again, exactly those;
- any other: "outcome unknown", with why; the memo page counts them and a Composer can
  send them again, knowing some may get it twice (memo_unknown_resend).

Beat's sweeper takes expired leases over (holder "sweeper:…") and enqueues
`reconcile_lease` for each, delayed until the provider's events can be trusted
(PROVIDER_EVENTS_LAG_SECONDS after the dead holder's last sign of life).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from django.conf import settings
from django.core.mail import get_connection
from django.db import transaction
from django.utils import timezone

from memo_service.backends.base import Acceptance, ReportsAcceptance, capabilities, reports_acceptance
from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.compose.sources import FALLBACK_LANGUAGE
from memo_service.memos.delivery_status import (
    deliveries_record_sent,
    deliveries_record_unknown,
    deliveries_record_unsent,
    deliveries_requeue_unknown,
)
from memo_service.memos.memo_status import memo_mark_sent_if_done
from memo_service.memos.models import DELIVERY_PENDING, MEMO_MAY_SEND, Delivery, Memo, SendLease
from memo_service.memos.send.dispatch import send_batches_enqueue
from memo_service.memos.send.leases import holder_name, lease_duration, lease_hold, lease_release
from memo_service.memos.send.payload import memo_tag
from memo_service.memos.send.sending import backend_is_idempotent

log = logging.getLogger(__name__)
DeliveryStatus = Delivery.Status

SWEEPER = "sweeper:"
# Our clock and the provider's may disagree by this much: the events asked for start
# this long before the lease was taken (a wider window only costs a few more pages).
CLOCK_SKEW = dt.timedelta(seconds=60)
# Past this, a provider that still cannot be asked will not be: Mailgun keeps events for
# at least three days, and a day of failed attempts is an outage someone has seen.
GIVE_UP_AFTER = dt.timedelta(days=1)
# Why a delivery is "outcome unknown" when nobody can know (the memo page shows it).
UNKNOWN_REASON = "the worker sending it stopped mid-call, and the email backend cannot say whether the provider has it"


def ask_at(lease: SendLease) -> dt.datetime:
    """When the provider's record of the lease's calls is complete: the holder's last
    renewal, plus one renewal period (it may have lived that much longer), plus the lag
    of the provider's events."""
    return lease.last_renewed_at + dt.timedelta(
        seconds=settings.DELIVERY_LEASE_RENEW_SECONDS + settings.PROVIDER_EVENTS_LAG_SECONDS
    )


def leases_expired_take_over(*, now: dt.datetime) -> list[tuple[int, float]]:
    """Take over every expired lease for reconciliation; returns (lease id, seconds to
    wait before asking the provider) for each taken."""
    taken = []
    for lease in SendLease.objects.filter(expires_at__lt=now).only("holder", "last_renewed_at", "note").order_by("id"):
        wait = max(0.0, (ask_at(lease) - now).total_seconds())
        # Guarded: the lease is still expired (a slow holder did not renew it meanwhile).
        # Held for the wait and a lease period after: the reconciling task renews it.
        if SendLease.objects.filter(pk=lease.pk, expires_at__lt=now).update(
            holder=f"{SWEEPER}{lease.holder}"[:200],
            expires_at=now + dt.timedelta(seconds=wait) + lease_duration(),
            note=lease.note or f"{lease.holder} stopped renewing it at {lease.last_renewed_at:%H:%M:%S} UTC",
        ):
            taken.append((lease.pk, wait))
    return taken


def lease_reconcile(*, lease_id: int) -> dict[str, int]:
    """Settle an expired lease's deliveries (see the module's docstring). Only the task
    the sweeper enqueued for it proceeds; another copy finds the lease held and returns."""
    now = timezone.now()
    if not SendLease.objects.filter(pk=lease_id, holder__startswith=SWEEPER).update(
        holder=holder_name(), expires_at=now + lease_duration()
    ):
        return {}
    lease_hold(lease_id=lease_id)
    try:
        result, deferred = _lease_settle(SendLease.objects.get(pk=lease_id), now)
        if deferred:
            # Rows a live lease also holds (a redelivered task that found them claimed):
            # kept, and looked at again once that lease is gone.
            SendLease.objects.filter(pk=lease_id).update(delivery_ids=deferred)
    except BaseException:
        lease_release(lease_id=lease_id, done=False)  # the sweeper's next run tries again
        raise
    lease_release(lease_id=lease_id, done=not deferred)
    log.info("lease %s reconciled: %s", lease_id, {**result, "deferred": len(deferred)})
    return result


def _lease_settle(lease: SendLease, now: dt.datetime) -> tuple[dict[str, int], list[int]]:
    """Settle what no live lease also holds; returns the result and the rows deferred."""
    lease_id = lease.pk
    ids = set(lease.delivery_ids)
    # Another live sender's lease may hold some of them (a redelivered task, a newer
    # send): they wait until it is gone (its holder may be the one that claimed them).
    # Leases being reconciled (they have a note) do not count: two dead tasks' leases on
    # the same deliveries would wait for each other for ever.
    live = SendLease.objects.filter(expires_at__gte=now, note="").exclude(pk=lease_id)
    for other in live.values_list("delivery_ids", flat=True):
        ids.difference_update(other)
    deferred = sorted(
        Delivery.objects.filter(id__in=set(lease.delivery_ids) - ids, status__in=DELIVERY_PENDING).values_list(
            "id", flat=True
        )
    )
    rows = Delivery.objects.filter(id__in=ids, status__in=DELIVERY_PENDING)
    queued = sorted(rows.filter(status=DeliveryStatus.QUEUED).values_list("id", flat=True))
    unknown = list(rows.filter(status=DeliveryStatus.SENDING).values_list("id", "memo_id", "developer__language"))
    result = {"requeued": len(queued), "accepted": 0, "resent": 0, "unknown": 0}
    if unknown:
        try:
            result.update(_settle_unknown(unknown, since=lease.created_at - CLOCK_SKEW, until=now))
        except Exception as exc:
            if now - lease.created_at < GIVE_UP_AFTER:
                # Asked again at the sweeper's next run: the lease expires now.
                log.warning("lease %s: the provider could not be asked: %s", lease_id, type(exc).__name__)
                SendLease.objects.filter(pk=lease_id).update(
                    note=f"asking the provider failed ({type(exc).__name__}); trying again"[:300]
                )
                raise
            result["unknown"] = deliveries_record_unknown(
                delivery_ids=[row[0] for row in unknown],
                claimed_before=now,
                reason=f"the provider could not be asked for a day whether it has it: {exc}",
            )
    send_batches_enqueue(queued)
    for memo_id in {lease.memo_id, *(row[1] for row in unknown)}:
        memo_mark_sent_if_done(memo_id=memo_id)
    return result, deferred


def _settle_unknown(unknown: list[tuple[int, int, str]], *, since: dt.datetime, until: dt.datetime) -> dict[str, int]:
    ids = [row[0] for row in unknown]
    window = capabilities().idempotency_window
    # The provider still holds the calls' idempotency keys (they were made after `since`).
    if backend_is_idempotent() and (window is None or timezone.now() - since < window):
        resent = deliveries_record_unsent(
            delivery_ids=ids,
            claimed_before=until,
            reason="the worker sending it stopped; sent again with the same idempotency key",
        )
        send_batches_enqueue(resent)
        return {"resent": len(resent)}
    with get_connection() as backend:
        if not reports_acceptance(backend):
            return {"unknown": deliveries_record_unknown(delivery_ids=ids, reason=UNKNOWN_REASON, claimed_before=until)}
        assert isinstance(backend, ReportsAcceptance)
        accepted: dict[int, Acceptance] = {}
        by_memo: dict[int, set[int]] = defaultdict(set)
        for delivery_id, memo_id, _ in unknown:
            by_memo[memo_id].add(delivery_id)
        for memo_id, memo_ids in by_memo.items():
            accepted.update(
                backend.accepted_delivery_ids(tag=memo_tag(memo_id), delivery_ids=memo_ids, begin=since, end=until)
            )
    # Recorded as the send would have: per call (message id), in the language the email
    # used, sent when the provider took the call (its first recipient's event).
    languages = _languages(set(by_memo))
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    taken_at: dict[str, dt.datetime] = {}
    for delivery_id, memo_id, language in unknown:
        if delivery_id in accepted:
            used = language if language in languages[memo_id] else FALLBACK_LANGUAGE
            message_id, at = accepted[delivery_id]
            groups[(message_id, used)].append(delivery_id)
            taken_at[message_id] = min(at, taken_at.get(message_id, at))
    for (message_id, language), group in groups.items():
        deliveries_record_sent(  # with the handover's evidence record, as a send records them
            delivery_ids=group, message_id=message_id, language=language, accepted_at=taken_at[message_id]
        )
    resent = deliveries_record_unsent(
        delivery_ids=[i for i in ids if i not in accepted],
        claimed_before=until,
        reason="the worker sending it stopped; the provider's events show it never got it, so it was sent again",
    )
    send_batches_enqueue(resent)
    return {"accepted": len(accepted), "resent": len(resent)}


def _languages(memo_ids: set[int]) -> dict[int, set[str]]:
    """The languages each memo has a translation in (a developer in another gets English)."""
    languages: dict[int, set[str]] = {memo_id: {FALLBACK_LANGUAGE} for memo_id in memo_ids}
    for memo in Memo.objects.filter(pk__in=memo_ids).prefetch_related("translations"):
        languages[memo.pk] |= {t.language for t in memo.translations.all()}
    return languages


class ResendRefused(Exception):
    pass


def memo_unknown_resend(*, memo: Memo, by: Actor) -> int:
    """A Composer's explicit choice: send again every delivery of the memo whose outcome
    nobody can know, accepting that a developer whose email did arrive gets it twice.
    Audited with the deliveries it sent again (their evidence records show the second
    attempt); until each is sent its record says why it was queued again. Refused
    (ResendRefused, changing nothing) for a memo that may not send: nothing would claim
    what it queued."""
    with transaction.atomic():
        current = Memo.objects.select_for_update().get(pk=memo.pk)
        if current.status not in MEMO_MAY_SEND:
            raise ResendRefused(
                f"“{current.title}” is {current.get_status_display()}: its emails are sent again only while it "
                "is sending or sent." + (" Resume it first." if current.status == Memo.Status.PAUSED else "")
            )
        ids = deliveries_requeue_unknown(
            memo=memo, reason="outcome unknown; sent again by a Composer's choice, knowing it may arrive twice"
        )
        if not ids:
            return 0
        audit_record(
            actor=by,
            action="memo.unknown_resent",
            obj=memo,
            deliveries=len(ids),
            delivery_ids=ids,
            risk="a developer whose email did arrive gets it twice",
        )
        send_batches_enqueue(ids)
    return len(ids)
