"""The sweeper settles what lost tasks and dead workers leave behind."""

import datetime as dt

import pytest
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send import sweeper
from memo_service.memos.send.control import memo_pause
from memo_service.memos.send.dispatch import deliveries_create, memo_dispatch, memo_send_start
from memo_service.memos.tasks import dispatch_memo, send_batch
from tests.conftest import approve, clock_at, dispatched, sent_delivery, sent_memo

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
    long_ago = timezone.now() - sweeper.SENDING_GRACE - dt.timedelta(seconds=1)
    stuck = sent_delivery(memo, developers["cn"], "sending", at=long_ago)  # claimed by a worker now gone
    fresh = sent_delivery(memo, developers["ru"], "sending")
    assert sweeper.deliveries_sweep()["abandoned"] == 1
    stuck.refresh_from_db()
    fresh.refresh_from_db()
    assert (stuck.status, fresh.status) == ("outcome_unknown", "sending")
    assert enqueued == []


def test_queued_deliveries_whose_task_was_lost_are_enqueued_again(memo, developers, enqueued):
    with clock_at(timezone.now() - sweeper.QUEUED_GRACE - dt.timedelta(seconds=1)):
        approve(memo)
        memo_send_start(memo=memo, dispatch_in_worker=False)
        # The dispatch wrote its first page (CN's) and stopped...
        deliveries_create(memo=memo, developers=Developer.objects.filter(pk=developers["cn"].pk))
    old = Delivery.objects.get(developer=developers["cn"])
    memo_dispatch(memo_id=memo.pk)  # ...and was resumed just now: RU's, just enqueued, is left alone
    assert sweeper.deliveries_sweep()["requeued"] == 1
    assert enqueued == [("send", [old.pk])]
    memo_pause(memo=memo, by=None)  # a paused memo's queue stays put
    enqueued.clear()
    assert sweeper.deliveries_sweep()["requeued"] == 0


def test_queued_deliveries_of_a_send_still_making_progress_wait_their_turn(memo, developers, enqueued):
    """A big send has rows queued for many minutes behind other tasks: not lost."""
    dispatched_long_ago = clock_at(timezone.now() - sweeper.QUEUED_GRACE * 2)
    with dispatched_long_ago:
        dispatched(memo)  # CN's still waits in the queue
    sent_delivery(memo, developers["ru"], "sent")
    assert sweeper.deliveries_sweep()["requeued"] == 0 and enqueued == []


def test_an_interrupted_dispatch_is_resumed(memo, enqueued):
    with clock_at(timezone.now() - sweeper.DISPATCH_GRACE - dt.timedelta(seconds=1)):
        approve(memo)
        memo_send_start(memo=memo, dispatch_in_worker=False)  # its dispatch never ran
    sweeper.deliveries_sweep()
    assert enqueued == [("dispatch", memo.pk)]


def test_the_memo_is_finished_once_nothing_is_pending(memo, developers, enqueued, eager):
    long_ago = timezone.now() - sweeper.SENDING_GRACE - dt.timedelta(seconds=1)
    sent_memo(memo, {developers["cn"]: "sending"}, at=long_ago)  # RU's sent, CN's claimed by a worker now gone
    assert Memo.objects.get(pk=memo.pk).status == "sending"
    sweeper.deliveries_sweep()
    assert Memo.objects.get(pk=memo.pk).status == "sent"
