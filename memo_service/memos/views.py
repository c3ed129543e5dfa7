"""The page a developer opens from the email.

Some mail scanners open every link in a message to check it, so GET and HEAD only show
the memo and a form; only the POST from the form's button records an acknowledgement.

The form has no CSRF token: the signed token in the URL already is the secret a forged
request would need, and with `Referrer-Policy: no-referrer` browsers post
`Origin: null`, which Django's CSRF check would refuse.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from memo_service.memos.acks import (
    AckTarget, TokenExpired, TokenInvalid, ack_token_read, ack_url, acknowledgement_record,
)
from memo_service.memos.models import Acknowledgement
from memo_service.memos.rendering import MemoRenderer, developer_context


# The memo's HTML is written by admins; on this page it may not run scripts or load
# anything from elsewhere (it shares an origin with the admin).
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _private(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex"
    response["Content-Security-Policy"] = CSP
    return response


def client_ip(request: HttpRequest) -> str | None:
    """The developer's address: REMOTE_ADDR, or with TRUSTED_PROXY_COUNT proxies in front,
    the address the outermost of them saw (the one it appended to X-Forwarded-For)."""
    count = settings.TRUSTED_PROXY_COUNT
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
    candidate = forwarded[-count] if count and len(forwarded) >= count else request.META.get("REMOTE_ADDR")
    try:
        return str(ipaddress.ip_address(candidate or ""))
    except ValueError:
        return None


def _memo_page(request: HttpRequest, target: AckTarget, status: int = 200) -> HttpResponse:
    ack = Acknowledgement.objects.filter(memo=target.memo, developer=target.developer).first()
    developer = developer_context(target.developer)
    language, subject, html, _ = MemoRenderer(target.memo).render_parts(
        developer, ack_url(target.memo.pk, target.developer.pk)
    )
    with translation.override(language):
        return render(
            request,
            "ack/memo.html",
            {"memo": target.memo, "subject": subject, "body": mark_safe(html), "ack": ack,
             "language": language},
            status=status,
        )


@csrf_exempt
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def ack(request: HttpRequest, token: str) -> HttpResponse:
    try:
        target = ack_token_read(token)
    except TokenInvalid:
        return _private(render(request, "ack/invalid.html", status=400))
    except TokenExpired:
        return _private(render(request, "ack/expired.html", status=410))
    if request.method == "POST":
        acknowledgement_record(
            target=target,
            ip_address=client_ip(request),
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
        )
        # Post/redirect/get: a reload shows the recorded acknowledgement, it does not re-post.
        return _private(redirect(request.path, permanent=False))
    return _private(_memo_page(request, target))
