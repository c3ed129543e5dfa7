"""The acknowledgement link as templates see it: one placeholder that the real link
replaces in what they produced, and inert links for previews, test sends and checks."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jinja2
from django.conf import settings
from django.core import signing
from django.urls import get_script_prefix, reverse

# Previews, test sends and the checks before a send give templates a link of the same
# shape as a developer's own (SITE_URL/ack/<token>/, a token of the same form and
# length), signed for another purpose so that the acknowledgement page refuses it: a
# template cannot tell them from the real send, and nobody can answer with it.
INERT_ACK_SALT = "memo_service.memos.ack.inert"


# The link as the admin's templates see it: one constant, at preview, check, approval and
# send alike, for every developer, so no template logic can tell them apart or read the
# time out of a token (a "time bomb"); the real link replaces it in what they produced,
# as a merge field is. A template may print it, never take it apart.
LINK_MARK = "memo-link-3f9a0c5d7e21b846"


def link_placeholder() -> str:
    return f"{settings.SITE_URL}/ack/{LINK_MARK}/"


def linked(text: str, placeholder: str, ack_url: str) -> str:
    """`text` with the link in place of its placeholder; a template that took the
    placeholder apart (sliced, changed its case) is an error, named without the link."""
    text = text.replace(placeholder, ack_url)
    if LINK_MARK in text.lower():
        raise LinkAltered("ack_url may only be printed as it is, not taken apart or changed")
    return text


class LinkAltered(jinja2.TemplateError):
    pass


def inert_ack_url(memo_id: int | None, developer_id: int | None) -> str:
    """A developer's link as a template sees it, that the acknowledgement page refuses."""
    payload = signing.b64_encode(b"[%d,%d]" % (memo_id or 0, developer_id or 0)).decode()
    token = signing.TimestampSigner(salt=INERT_ACK_SALT).sign(payload)
    return settings.SITE_URL + reverse("ack", args=[token])


def check_ack_urls(memo_id: int) -> Callable[[int], str]:
    """For the check of a whole audience before a send: a developer's link (by id) of
    the length and shape of their own (SITE_URL/ack/<payload>:<time>:<signature>/),
    unsigned. That output is compared and thrown away, never shown or sent, and signing
    each link and reversing its URL took half of a 200,000-developer check."""
    before, after = _around_token(settings.SITE_URL, get_script_prefix())
    after = f":{'0' * 6}:{'0' * 43}{after}"

    def url(developer_id: int) -> str:
        return before + signing.b64_encode(b"[%d,%d]" % (memo_id, developer_id)).decode() + after

    return url


@functools.lru_cache(maxsize=16)
def _around_token(site_url: str, script_prefix: str) -> tuple[str, str]:
    """The ack link's text before and after its token."""
    before, after = reverse("ack", args=["TOKEN"]).split("TOKEN")
    return site_url + before, after


def is_inert_ack_token(token: str) -> bool:
    """Is this the link of a preview, a test email or a check (inert_ack_url)? Its page
    refuses it, saying what it is."""
    try:
        signing.TimestampSigner(salt=INERT_ACK_SALT).unsign(token)
    except signing.BadSignature:
        return False
    return True
