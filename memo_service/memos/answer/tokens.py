"""The links a developer answers through, and what a link stands for.

A token is `[memo id, developer id]` signed with its own salt and a timestamp: no
personal data, bound to one memo and one developer. It stays valid until the memo's
deadline plus ACK_GRACE_DAYS (or ACK_TOKEN_MAX_AGE_DAYS after signing when the memo has
no deadline). Old SECRET_KEYs in SECRET_KEY_FALLBACKS still verify, so keys can rotate.
A console's link (the notices API's) also names the API client that relays the answer.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.db.models import F
from django.urls import get_script_prefix, reverse
from django.utils import timezone

from memo_service.api.models import ApiClient, Scope
from memo_service.developers.models import Developer
from memo_service.memos.models import DELIVERY_HANDED_OVER, Delivery, Memo

ACK_SALT = "memo_service.memos.ack"
# A console's link (the notices API's ack_url): bound to the API client that asked for it,
# whose relay its answers are recorded as.
CONSOLE_SALT = "memo_service.memos.ack.console"


class TokenInvalid(Exception):
    """Tampered, truncated, or for a memo/developer pair that was never sent."""


class TokenExpired(Exception):
    pass


class DeveloperErased(Exception):
    """The developer's personal data was erased: their link is gone for good."""


def _signer() -> signing.TimestampSigner:
    return _signer_for(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


@functools.lru_cache(maxsize=8)
def _signer_for(key: str, fallbacks: tuple[str, ...], salt: str = ACK_SALT) -> signing.TimestampSigner:
    """One signer per key and salt, made once and reused: a send signs a link per recipient."""
    return signing.TimestampSigner(key=key, fallback_keys=list(fallbacks), salt=salt)


def _console_signer() -> signing.TimestampSigner:
    return _signer_for(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS), CONSOLE_SALT)


def console_url(memo_id: int, developer_id: int, client_id: int) -> str:
    """The console's link to the developer's page: answers given there are recorded as
    relayed by that client (channel console), and only while it may relay them."""
    token = _console_signer().sign_object([memo_id, developer_id, client_id])
    before, after = _ack_url_around_token(settings.SITE_URL, get_script_prefix())
    return before + token + after


def answer_token(memo_id: int, developer_id: int, signed_at: dt.datetime | None = None) -> str:
    """The token sign_object([memo_id, developer_id]) makes (unsign_object reads it), its
    payload written out rather than by a JSON encoder a link. `signed_at`: the time it
    carries (default now), as TimestampSigner.sign writes it."""
    signer = _signer()
    value = signing.b64_encode(b"[%d,%d]" % (memo_id, developer_id)).decode()
    if signed_at is None:
        return signer.sign(value)
    return signing.Signer.sign(signer, f"{value}{signer.sep}{signing.b62_encode(int(signed_at.timestamp()))}")


def ack_url(memo_id: int, developer_id: int, signed_at: dt.datetime | None = None) -> str:
    """The developer's link. A send signs it at the delivery's creation, so every render
    of one email is the same to the byte: a call sent again (an idempotency key's retry)
    is the same call, and the text hash recorded is the one delivered."""
    before, after = _ack_url_around_token(settings.SITE_URL, get_script_prefix())
    return before + answer_token(memo_id, developer_id, signed_at) + after


@functools.lru_cache(maxsize=16)
def _ack_url_around_token(site_url: str, script_prefix: str) -> tuple[str, str]:
    """The link's text before and after the token: reverse() costs more than signing,
    and a send makes a link per recipient."""
    before, after = (site_url + reverse("ack", args=["TOKEN"])).rsplit("TOKEN", 1)
    return before, after


@dataclass(frozen=True)
class AnswerTarget:
    memo: Memo
    developer: Developer
    delivery: Delivery
    relayed_by: ApiClient | None = None  # a console's link: the client whose relay it is


def _read(token: str) -> tuple[signing.TimestampSigner, int, int, ApiClient | None]:
    """(signer, memo id, developer id, relaying client) of an email's or a console's link."""
    for signer, size in ((_signer(), 2), (_console_signer(), 3)):
        try:
            ids = [int(i) for i in signer.unsign_object(token)]
        except (signing.BadSignature, ValueError, TypeError):
            continue
        if len(ids) != size:
            raise TokenInvalid
        if size == 2:
            return signer, ids[0], ids[1], None
        client = ApiClient.objects.filter(pk=ids[2], is_active=True).first()
        if client is None or not client.has_scope(Scope.ANSWERS_RELAY):
            raise TokenInvalid  # the client lost the right to relay answers
        return signer, ids[0], ids[1], client
    raise TokenInvalid


def answer_token_read(token: str) -> AnswerTarget:
    """The memo, developer and delivery a token stands for; raises TokenInvalid/TokenExpired."""
    signer, memo_id, developer_id, client = _read(token)
    target = answer_target(memo_id=memo_id, developer_id=developer_id, relayed_by=client)
    if target is None:
        raise TokenInvalid
    if target.developer.erased_at is not None:
        raise DeveloperErased
    if target.memo.ack_deadline is not None:
        if not answers_open(target.memo):
            raise TokenExpired
    else:
        try:
            signer.unsign_object(token, max_age=dt.timedelta(days=settings.ACK_TOKEN_MAX_AGE_DAYS))
        except signing.SignatureExpired as exc:
            raise TokenExpired from exc
    return target


# Deliveries the developer may have in their mailbox: a page for one never handed over (a
# failed send, one still queued) is not shown, and takes no answer.
_MAY_HAVE_ARRIVED = (*DELIVERY_HANDED_OVER, Delivery.Status.OUTCOME_UNKNOWN)


def answer_target(*, memo_id: int, developer_id: int, relayed_by: ApiClient | None = None) -> AnswerTarget | None:
    """The memo as sent to the developer, or None if it never was."""
    # The latest email that went out (a reminder, say): "seconds since delivery" counts from it.
    delivery = (
        Delivery.objects.select_related("memo", "developer")
        .filter(memo_id=memo_id, developer_id=developer_id, status__in=_MAY_HAVE_ARRIVED)
        .order_by(F("sent_at").desc(nulls_last=True), "-id")
        .first()
    )
    if delivery is None:
        return None
    return AnswerTarget(memo=delivery.memo, developer=delivery.developer, delivery=delivery, relayed_by=relayed_by)


def answers_open(memo: Memo) -> bool:
    """Whether the memo still takes answers: until its deadline plus ACK_GRACE_DAYS."""
    if memo.ack_deadline is None:
        return True
    return timezone.now() <= memo.ack_deadline + dt.timedelta(days=settings.ACK_GRACE_DAYS)
