"""The sweeper settles what lost tasks and dead workers leave behind."""

import datetime as dt

import pytest
from django.utils import timezone

from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send import sweeper
from memo_service.memos.tasks import dispatch_memo, send_batch

pytestmark = pytest.mark.django_db


@pytest.fixture
def enqueued(monkeypatch):
    calls = []
    monkeypatch.setattr(send_batch, "delay", lambda ids: calls.append(("send", ids)))
    monkeypatch.setattr(dispatch_memo, "delay", lambda memo_id: calls.append(("dispatch", memo_id)))
    return calls


def test_a_delivery_left_sending_by_a_dead_worker_becomes_outcome_unknown(memo, developers, enqueued, eager):
    """Under no lease and past the hard time limit; the local outbox cannot say whether
    it has it (tests/test_reconcile.py: a provider that can)."""
    Memo.objects.filter(pk=memo.pk).update(status="sending", dispatched_at=timezone.now())
    long_ago = timezone.now() - sweeper.SENDING_GRACE - dt.timedelta(seconds=1)
    stuck = Delivery.objects.create(memo=memo, developer=developers["cn"], status="sending", status_changed_at=long_ago)
    fresh = Delivery.objects.create(
        memo=memo, developer=developers["ru"], status="sending", status_changed_at=timezone.now()
    )
    assert sweeper.deliveries_sweep()["abandoned"] == 1
    stuck.refresh_from_db()
    fresh.refresh_from_db()
    assert (stuck.status, fresh.status) == ("outcome_unknown", "sending")
    assert enqueued == []


def test_queued_deliveries_whose_task_was_lost_are_enqueued_again(memo, developers, enqueued):
    Memo.objects.filter(pk=memo.pk).update(status="sending")
    old = Delivery.objects.create(memo=memo, developer=developers["cn"])
    Delivery.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - sweeper.QUEUED_GRACE - dt.timedelta(seconds=1)
    )
    Delivery.objects.create(memo=memo, developer=developers["ru"])  # just enqueued: left alone
    assert sweeper.deliveries_sweep()["requeued"] == 1
    assert enqueued == [("send", [old.pk])]
    Memo.objects.filter(pk=memo.pk).update(status="paused")  # a paused memo's queue stays put
    enqueued.clear()
    assert sweeper.deliveries_sweep()["requeued"] == 0


def test_queued_deliveries_of_a_send_still_making_progress_wait_their_turn(memo, developers, enqueued):
    """A big send has rows queued for many minutes behind other tasks: not lost."""
    Memo.objects.filter(pk=memo.pk).update(status="sending")
    waiting = Delivery.objects.create(memo=memo, developer=developers["cn"])
    Delivery.objects.filter(pk=waiting.pk).update(created_at=timezone.now() - sweeper.QUEUED_GRACE * 2)
    Delivery.objects.create(memo=memo, developer=developers["ru"], status="sent", sent_at=timezone.now())
    assert sweeper.deliveries_sweep()["requeued"] == 0 and enqueued == []


def test_an_interrupted_dispatch_is_resumed(memo, enqueued):
    Memo.objects.filter(pk=memo.pk).update(
        status="sending", send_started_at=timezone.now() - sweeper.DISPATCH_GRACE - dt.timedelta(seconds=1)
    )
    sweeper.deliveries_sweep()
    assert enqueued == [("dispatch", memo.pk)]


def test_the_memo_is_finished_once_nothing_is_pending(memo, developers, enqueued, eager):
    Memo.objects.filter(pk=memo.pk).update(status="sending", dispatched_at=timezone.now())
    Delivery.objects.create(
        memo=memo,
        developer=developers["cn"],
        status="sending",
        status_changed_at=timezone.now() - sweeper.SENDING_GRACE - dt.timedelta(seconds=1),
    )
    sweeper.deliveries_sweep()
    assert Memo.objects.get(pk=memo.pk).status == "sent"
