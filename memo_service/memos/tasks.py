"""Celery tasks: ids in, one call out. Acknowledgement policy is in settings; a locked or
briefly unreachable database is retried here (every step is safe to repeat)."""

from celery import shared_task
from django.db import OperationalError

from memo_service.memos import correction, reminders, withdrawal
from memo_service.memos.evidence import append, sequencer
from memo_service.memos.notify import notifications
from memo_service.memos.send import dispatch, reconcile, sending, sweeper
from memo_service.memos.webhooks import delivery, events

RETRY = {"autoretry_for": (OperationalError,), "retry_backoff": 2, "retry_jitter": True, "max_retries": 6}


@shared_task(name="memos.send_batch", **RETRY)
def send_batch(delivery_ids: list[int]) -> None:
    sending.delivery_send_batch(delivery_ids=delivery_ids)


@shared_task(name="memos.dispatch_memo", **RETRY)
def dispatch_memo(memo_id: int) -> None:
    dispatch.memo_dispatch(memo_id=memo_id)


@shared_task(name="memos.send_scheduled")
def send_scheduled() -> None:
    dispatch.memos_send_scheduled()


@shared_task(name="memos.sweep", **RETRY)
def sweep() -> None:
    sweeper.deliveries_sweep()


@shared_task(name="memos.recover_leases", **RETRY)
def recover_leases() -> None:
    sweeper.leases_recover()


@shared_task(name="memos.reconcile_lease", **RETRY)
def reconcile_lease(lease_id: int) -> None:
    """An expired lease's deliveries; a provider that cannot be asked now is asked again
    at the sweeper's next run (the lease expires again)."""
    reconcile.lease_reconcile(lease_id=lease_id)


@shared_task(name="memos.remind")
def remind() -> None:
    reminders.reminders_send_due()


@shared_task(name="memos.webhook_deliver", **RETRY)
def webhook_deliver(message_id: int) -> None:
    delivery.webhook_deliver(message_id=message_id)


@shared_task(name="memos.webhooks_due")
def webhooks_due() -> None:
    """Retries that are due, and each passed deadline, once."""
    delivery.webhooks_retry_due()
    events.memos_deadline_notify()


@shared_task(name="memos.evidence_seal", **RETRY)
def evidence_seal(memo_id: int) -> None:
    # Another sequencer of the memo at work: this process does not wait for it (one
    # blocked on the memo's lock is one fewer sending); the next start takes the rest.
    if sequencer.evidence_seal(memo_id=memo_id, wait=False) is None:
        append.evidence_seal_later(memo_id)


@shared_task(name="memos.evidence_seal_due")
def evidence_seal_due() -> None:
    sequencer.evidence_seal_due()


@shared_task(name="memos.notifications_send", **RETRY)
def notifications_send(notification_ids: list[int]) -> None:
    notifications.notifications_send(notification_ids=notification_ids)


@shared_task(name="memos.correction_started", **RETRY)
def correction_started(memo_id: int) -> None:
    correction.correction_started(memo_id=memo_id)


@shared_task(name="memos.withdrawal_notify", **RETRY)
def withdrawal_notify(memo_id: int) -> None:
    withdrawal.withdrawal_notify(memo_id=memo_id)
