"""Leases: which worker process holds a send task's deliveries, and until when.

A send task takes a lease on its deliveries before it claims any of them, and a thread
of the worker process renews every lease the process holds while it works, whatever its
main thread is doing (rendering, waiting for the provider). A process that dies, with
its machine or alone, stops renewing: its lease expires DELIVERY_LEASE_SECONDS later,
and beat hands the deliveries to reconciliation (memos/send/reconcile.py) within 15 s,
whatever the broker (Redis would return the task itself only after its
visibility timeout, an hour).

One row per task, not a write per delivery: renewal is one UPDATE per process.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Case, F, Value, When
from django.utils import timezone

from memo_service.memos.models import SendLease

log = logging.getLogger(__name__)

_held: set[int] = set()
_lock = threading.Lock()
_heartbeat_pid = 0  # the process whose heartbeat thread runs (threads do not survive a fork)


def lease_duration() -> dt.timedelta:
    return dt.timedelta(seconds=settings.DELIVERY_LEASE_SECONDS)


def holder_name() -> str:
    """This process, as an operator finds it: host and pid (no personal data)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def lease_take(*, memo_id: int, delivery_ids: list[int]) -> SendLease:
    """Hold these deliveries for this process, renewed until lease_release."""
    now = timezone.now()
    lease = SendLease.objects.create(
        holder=holder_name(),
        memo_id=memo_id,
        delivery_ids=delivery_ids,
        created_at=now,
        last_renewed_at=now,
        expires_at=now + lease_duration(),
    )
    lease_hold(lease_id=lease.pk)
    return lease


def lease_hold(*, lease_id: int) -> None:
    """Renew this lease from this process from now on."""
    global _heartbeat_pid
    with _lock:
        if _heartbeat_pid != os.getpid():
            # The first lease of this process (a forked pool process inherits its
            # parent's memory, not its threads, and none of its leases).
            _heartbeat_pid = os.getpid()
            _held.clear()
            threading.Thread(target=_heartbeat, name="lease-heartbeat", daemon=True).start()
        _held.add(lease_id)


def lease_release(*, lease_id: int, done: bool) -> None:
    """Stop renewing. Done: the task settled every delivery it claimed, the lease goes.
    Not done (it stopped on an error after claiming): the lease expires now, so the
    sweeper reconciles what it left at its next run instead of after a grace period."""
    with _lock:
        _held.discard(lease_id)
    try:
        if done:
            SendLease.objects.filter(pk=lease_id).delete()
        else:
            SendLease.objects.filter(pk=lease_id).update(expires_at=timezone.now())
    except DatabaseError:
        # The database is gone for now (the error that stopped the task, most likely):
        # unrenewed, the lease expires by itself.
        log.warning("lease %s: could not release it; it expires by itself", lease_id)


def leases_renew() -> int:
    """Extend every lease this process holds; returns how many rows it renewed."""
    with _lock:
        ids = list(_held)
    if not ids:
        return 0
    now = timezone.now()
    return SendLease.objects.filter(pk__in=ids, holder=holder_name()).update(
        # A lease taken over for reconciliation (it has a note) keeps its dead holder's
        # last sign of life: the provider's lag is counted from it.
        last_renewed_at=Case(When(note="", then=Value(now)), default=F("last_renewed_at")),
        expires_at=now + lease_duration(),
    )


def _heartbeat() -> None:
    stop = threading.Event()
    while not stop.wait(settings.DELIVERY_LEASE_RENEW_SECONDS):
        try:
            leases_renew()
        except DatabaseError as exc:
            # A terminated connection or a locked database: the next beat tries again on a
            # new connection; the lease outlives a few missed beats (see settings).
            log.warning("lease renewal failed: %s", type(exc).__name__)
        finally:
            # Its own connection (Django's are per thread), closed between beats so that
            # an idle worker holds none open and a terminated one is never reused.
            connections.close_all()
