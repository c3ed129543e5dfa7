"""End to end with a real Celery worker process: the admin sends, the worker renders and
hands the emails to the outbox, the developer opens the link and acknowledges, and the
funnel counts it. Runs against whatever DATABASE_URL / CELERY_BROKER_URL the suite runs
against (SQLite + filesystem broker by default; PostgreSQL, Redis, RabbitMQ in CI)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from memo_service.memos.models import Answer, Delivery, Memo
from tests.conftest import approve, found, make_developer, make_memo, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def memo_emails(outbox: Path) -> list[Path]:
    """The memo's own emails in the outbox, not the notifications of its approval."""
    return [p for p in outbox.glob("*.eml") if b"X-Memo-Notification:" not in p.read_bytes()]


def ack_link(outbox: Path, address: str) -> str:
    for path in outbox.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if address in str(message["To"]):
            body = message.get_body(preferencelist=("plain",))
            assert body is not None, f"no text part in the email to {address}"
            return found(r"http://testserver(/ack/\S+/)", body.get_content(), 1)
    raise AssertionError(f"no email to {address}")


def test_a_memo_goes_from_the_admin_to_an_acknowledgement(client, django_user_model, worker, capsys):
    admin = django_user_model.objects.create_superuser("alice", "alice@example.com", "pw-alice-123")
    client.force_login(admin)
    make_developer("cn-1", "CN", "zh-hans", name="Wang Wei")
    make_developer("ru-1", "RU", name="Olga Petrova")
    make_developer("us-1", "US", name="John Smith")
    memo = approve(make_memo())

    response = client.post(
        reverse("admin:memos_memo_changelist"),
        {"action": "send_selected", "_selected_action": [memo.pk]},
        follow=True,
    )
    assert "being queued" in response.content.decode()
    wait_for(lambda: Memo.objects.get(pk=memo.pk).status == "sent", what="the memo to be sent")
    assert len(memo_emails(worker)) == 2
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}

    link = ack_link(worker, "cn-1@example.com")
    page = client.get(link, follow=True)
    assert page.status_code == 200 and "来自中国的流量将被阻止" in page.content.decode()
    assert client.head(link).status_code == 303
    assert not Answer.objects.exists()

    page_url = page.redirect_chain[-1][0]
    client.post(page_url, {"response": "acknowledged", "interacted": "1"}, HTTP_USER_AGENT="Mozilla/5.0 (e2e phone)")
    ack = Answer.objects.get()
    assert ack.developer.external_id == "cn-1" and ack.content_hash == Memo.objects.get().content_hash

    capsys.readouterr()
    call_command("memo_status", memo.slug, "--json")
    funnel = json.loads(capsys.readouterr().out)
    assert (funnel["targeted"], funnel["sent"], funnel["failed"], funnel["acknowledged"]) == (2, 2, 0, 1)
    assert funnel["by_country"]["CN"]["acknowledged"] == 1 and funnel["by_country"]["RU"]["acknowledged"] == 0


def test_a_memo_scheduled_a_few_seconds_ahead_is_sent_by_beat(client, django_user_model, worker, beat):
    composer = django_user_model.objects.create_superuser("alice", "alice@example.com", "pw-alice-123")
    client.force_login(composer)
    make_developer("cn-1", "CN", "zh-hans", name="Wang Wei")
    make_developer("ru-1", "RU", name="Olga Petrova")
    memo = approve(make_memo())
    at = timezone.localtime(timezone.now() + dt.timedelta(seconds=4))

    client.post(
        reverse("admin:memos_memo_schedule", args=[memo.pk]),
        {"send_at_0": at.strftime("%Y-%m-%d"), "send_at_1": at.strftime("%H:%M:%S")},
    )
    assert Memo.objects.get(pk=memo.pk).status == "scheduled"
    assert not memo_emails(worker), "nothing goes out before its time"

    wait_for(lambda: Memo.objects.get(pk=memo.pk).status == "sent", timeout=60, what="beat to start the scheduled send")
    started = Memo.objects.get(pk=memo.pk).send_started_at
    assert started is not None and started >= at.replace(microsecond=0)
    assert len(memo_emails(worker)) == 2
