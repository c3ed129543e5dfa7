"""Acknowledgement links and the acknowledgement itself.

A token is `[memo id, developer id]` signed with its own salt and a timestamp: no
personal data, bound to one memo and one developer. It stays valid until the memo's
deadline plus ACK_GRACE_DAYS (or ACK_TOKEN_MAX_AGE_DAYS after signing when the memo has
no deadline). Old SECRET_KEYs in SECRET_KEY_FALLBACKS still verify, so keys can rotate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos.models import Acknowledgement, Delivery, Memo

ACK_SALT = "memo_service.memos.ack"


class TokenInvalid(Exception):
    """Tampered, truncated, or for a memo/developer pair that was never sent."""


class TokenExpired(Exception):
    pass


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=ACK_SALT)


def ack_token(memo_id: int, developer_id: int) -> str:
    return _signer().sign_object([memo_id, developer_id])


def ack_url(memo_id: int, developer_id: int) -> str:
    return settings.SITE_URL + reverse("ack", args=[ack_token(memo_id, developer_id)])


@dataclass(frozen=True)
class AckTarget:
    memo: Memo
    developer: Developer
    delivery: Delivery


def ack_token_read(token: str) -> AckTarget:
    """The memo, developer and delivery a token stands for; raises TokenInvalid/TokenExpired."""
    signer = _signer()
    try:
        memo_id, developer_id = signer.unsign_object(token)
        memo_id, developer_id = int(memo_id), int(developer_id)
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise TokenInvalid from exc
    delivery = (
        Delivery.objects.select_related("memo", "developer")
        .filter(memo_id=memo_id, developer_id=developer_id)
        .order_by("id")
        .first()
    )
    if delivery is None:
        raise TokenInvalid
    memo = delivery.memo
    if memo.ack_deadline is not None:
        if timezone.now() > memo.ack_deadline + dt.timedelta(days=settings.ACK_GRACE_DAYS):
            raise TokenExpired
    else:
        try:
            signer.unsign_object(token, max_age=dt.timedelta(days=settings.ACK_TOKEN_MAX_AGE_DAYS))
        except signing.SignatureExpired as exc:
            raise TokenExpired from exc
    return AckTarget(memo=memo, developer=delivery.developer, delivery=delivery)


def acknowledgement_record(
    *,
    target: AckTarget,
    response: str = Acknowledgement.Response.ACKNOWLEDGED,
    ip_address: str | None,
    user_agent: str,
    comment: str = "",
) -> tuple[Acknowledgement, bool]:
    """Record the developer's press of the button; a second press changes nothing.

    Returns (acknowledgement, created).
    """
    now = timezone.now()
    sent_at = target.delivery.sent_at
    return Acknowledgement.objects.get_or_create(
        memo=target.memo,
        developer=target.developer,
        defaults={
            "response": response,
            "comment": comment,
            "content_hash": target.memo.content_hash,
            "ip_address": ip_address,
            "user_agent": user_agent[:1000],
            "seconds_since_delivery": (now - sent_at).total_seconds() if sent_at else None,
        },
    )
