"""Emails to one person outside a memo's send (memos/notify/): made with what they tell,
sent once by a worker through the configured backend, in the recipient's language, and
never sent twice."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import transaction

from memo_service.memos.models import Notification
from memo_service.memos.notify.notifications import notification_create, notification_hash, notifications_send
from tests.conftest import Provider, make_developer

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_a_notification_is_sent_once_after_its_transaction_commits(memo: Any, eager: None) -> None:
    user = get_user_model().objects.create_user("carol", "carol@example.com", "pw-carol-123")
    with transaction.atomic():
        notification = notification_create(
            kind=Notification.Kind.APPROVED, memo=memo, user=user, context={"approver": "anna", "site_url": ""}
        )
        assert mail.outbox == []  # not before the commit
    notification.refresh_from_db()
    assert notification.status == Notification.Status.SENT
    assert [m.to for m in mail.outbox] == [["carol@example.com"]]
    assert mail.outbox[0].subject == f"Approved: {memo.title}"
    assert "anna approved the memo" in mail.outbox[0].body
    assert notification.text_hash == notification_hash(notification.subject, notification.text)
    notifications_send(notification_ids=[notification.pk])  # a task delivered twice
    assert len(mail.outbox) == 1


def test_a_rollback_sends_nothing(memo: Any, eager: None) -> None:
    user = get_user_model().objects.create_user("carol", "carol@example.com", "pw-carol-123")
    with pytest.raises(RuntimeError), transaction.atomic():
        notification_create(kind=Notification.Kind.APPROVED, memo=memo, user=user, context={"approver": "anna"})
        raise RuntimeError
    assert mail.outbox == [] and not Notification.objects.exists()


def test_a_provider_refusal_is_recorded_without_its_text(memo: Any, mailgun: Provider, eager: None) -> None:
    developer = make_developer("dev-x", "CN", "zh-hans")
    mailgun.failures.append((401, {"message": "Invalid private key"}))
    notification = notification_create(
        kind=Notification.Kind.APPROVED, memo=memo, developer=developer, context={"approver": "anna"}
    )
    notification.refresh_from_db()
    assert notification.status == Notification.Status.FAILED
    assert notification.status_reason.startswith("AnymailRequestsAPIError (HTTP 401")
    assert notification.language == "zh-hans"


def test_a_developer_through_the_provider_gets_its_message_id(memo: Any, mailgun: Provider, eager: None) -> None:
    developer = make_developer("dev-y", "CN")
    notification = notification_create(
        kind=Notification.Kind.APPROVED, memo=memo, developer=developer, context={"approver": "anna"}
    )
    notification.refresh_from_db()
    assert notification.status == Notification.Status.SENT and notification.provider_message_id
    assert [a.first("to") for a in mailgun.accepted] == [developer.email]
