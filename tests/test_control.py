"""Pause, resume and cancel a memo while it sends."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.dispatch import memo_dispatch, memo_send_start
from memo_service.memos.send.sending import delivery_send_batch
from memo_service.memos.tasks import send_batch
from tests.conftest import approve, make_developer

pytestmark = pytest.mark.django_db


@pytest.fixture
def sending(memo, developers, monkeypatch):
    """The memo dispatched to 6 developers, nothing sent yet; enqueued batches are recorded."""
    for i in range(4):
        make_developer(f"cn-x{i}", "CN")
    enqueued = []
    monkeypatch.setattr(send_batch, "apply_async", lambda args, *a, **kw: enqueued.append(args[0]))
    approve(memo)
    memo_send_start(memo=memo)
    memo_dispatch(memo_id=memo.pk)
    memo.enqueued = enqueued
    return memo


def ids(memo):
    return list(Delivery.objects.filter(memo=memo).order_by("id").values_list("id", flat=True))


def test_pause_at_half_then_resume_sends_everyone_once(sending, mailgun, django_capture_on_commit_callbacks):
    first_half, second_half = ids(sending)[:3], ids(sending)[3:]
    delivery_send_batch(delivery_ids=first_half)
    call_command("send_memo", sending.slug, "--pause", stdout=io.StringIO())
    delivery_send_batch(delivery_ids=second_half)  # a batch already in the queue: it sends nothing
    assert len(mailgun.accepted) == 3
    assert Memo.objects.get(pk=sending.pk).status == "paused"
    sending.enqueued.clear()
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("send_memo", sending.slug, "--resume", stdout=out)
    assert "3 queued deliveries enqueued again" in out.getvalue()
    for batch in sending.enqueued:
        delivery_send_batch(delivery_ids=batch)
    recipients = [m.first("to") for m in mailgun.accepted]
    assert len(recipients) == 6 and len(set(recipients)) == 6  # nobody twice, nobody missing
    assert Memo.objects.get(pk=sending.pk).status == "sent"


def test_cancel_gives_every_queued_delivery_its_final_status(sending, mailgun):
    delivery_send_batch(delivery_ids=ids(sending)[:2])
    out = io.StringIO()
    call_command("send_memo", sending.slug, "--cancel", stdout=out)
    assert "4 queued deliveries will not be sent" in out.getvalue()
    delivery_send_batch(delivery_ids=ids(sending))
    statuses = sorted(Delivery.objects.values_list("status", flat=True))
    assert statuses == ["cancelled"] * 4 + ["sent"] * 2 and len(mailgun.accepted) == 2
    with pytest.raises(CommandError, match="can no longer be cancelled"):
        call_command("send_memo", sending.slug, "--cancel")


def test_pause_and_resume_from_the_admin(admin_client, sending):
    admin_client.post(reverse("admin:memos_memo_pause", args=[sending.pk]))
    page = admin_client.get(reverse("admin:memos_memo_change", args=[sending.pk])).content.decode()
    assert 'id="resume"' in page and "paused by an admin" in page
    admin_client.post(reverse("admin:memos_memo_resume", args=[sending.pk]))
    assert Memo.objects.get(pk=sending.pk).status == "sending"


def test_resuming_a_memo_that_is_not_paused_is_refused(sending):
    with pytest.raises(CommandError, match="is not paused"):
        call_command("send_memo", sending.slug, "--resume")
