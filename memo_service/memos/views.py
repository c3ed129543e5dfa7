"""The page a developer opens from the email.

Some mail scanners open every link in a message to check it, so GET and HEAD only show
the memo and a form; only the POST from the form's button records an acknowledgement.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from memo_service.memos.acks import (
    AckTarget, TokenExpired, TokenInvalid, ack_token_read, ack_url, acknowledgement_record,
)
from memo_service.memos.models import Acknowledgement
from memo_service.memos.rendering import MemoRenderer
from memo_service.memos.sending import developer_context


def _private(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex"
    return response


def _memo_page(request: HttpRequest, target: AckTarget, status: int = 200) -> HttpResponse:
    ack = Acknowledgement.objects.filter(memo=target.memo, developer=target.developer).first()
    developer = developer_context(target.delivery)
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
            ip_address=request.META.get("REMOTE_ADDR"),
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
        )
        # Post/redirect/get: a reload shows the recorded acknowledgement, it does not re-post.
        return _private(redirect(request.path, permanent=False))
    return _private(_memo_page(request, target))
