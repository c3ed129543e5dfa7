"""The page a developer opens from the email.

Some mail scanners open every link in a message to check it, so GET and HEAD only show
the memo and its forms; only a POST from the page's buttons records an answer.

The first GET of /ack/<token>/ moves the token into a cookie (path /ack/, HttpOnly) and
redirects to /ack/memo/<id>/, so the token leaves the address bar, the history and any
screenshot, as Django's password reset does. The forms have no CSRF token: the signed
token already is the secret a forged request would need, and with
`Referrer-Policy: no-referrer` browsers post `Origin: null`, which Django's CSRF check
would refuse.
"""

from __future__ import annotations

import ipaddress
import logging

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from django_countries import countries

from memo_service.memos.answer.answers import (
    ANSWERS_CLOSED,
    AnswerInvalid,
    answer_record,
    answers_of,
    correction_sent,
    memo_no_longer_applies,
)
from memo_service.memos.answer.receipt import receipt_text
from memo_service.memos.answer.sent_text import ShownText, sent_memo, target_text
from memo_service.memos.answer.statement import assent_shown, name_order
from memo_service.memos.answer.tokens import (
    AnswerTarget,
    DeveloperErased,
    TokenExpired,
    TokenInvalid,
    ack_url,
    answer_target,
    answer_token_read,
)
from memo_service.memos.compose.context import developer_context
from memo_service.memos.compose.links import is_inert_ack_token
from memo_service.memos.compose.rendering import error_reason
from memo_service.memos.evidence.approved import NotApproved
from memo_service.memos.models import Answer, AuditEvent, Memo
from memo_service.memos.snapshot import traffic_of

# The memo's HTML is written by admins; on this page it may not run scripts other than
# our own, nor load anything from elsewhere (it shares an origin with the admin).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
COOKIE_AGE_S = 24 * 3600  # long enough to read and come back; the email link works again after
# Invalid links from one address: 30 in 10 minutes is far more than a person mistyping.
FAILURES_ALLOWED = 30
FAILURE_WINDOW_S = 600

log = logging.getLogger(__name__)


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


def _failures_key(request: HttpRequest) -> str:
    return f"ack-failures:{client_ip(request)}"


def _rate_limited(request: HttpRequest) -> bool:
    return int(cache.get(_failures_key(request), 0)) >= FAILURES_ALLOWED


def _count_failure(request: HttpRequest) -> None:
    key = _failures_key(request)
    if not cache.add(key, 1, FAILURE_WINDOW_S):
        try:
            cache.incr(key)
        except ValueError:  # expired in between
            cache.add(key, 1, FAILURE_WINDOW_S)


def _error_page(request: HttpRequest, template: str, status: int) -> HttpResponse:
    return _private(render(request, template, status=status))


def _read(request: HttpRequest, token: str | None) -> AnswerTarget | HttpResponse:
    """The link's developer and memo, or the page that says why not. Only invalid links
    count against their address, and only they are refused once it has sent too many: a
    valid link always opens, whoever shares the address (a NAT, a proxy)."""
    if not token:
        return _error_page(request, "ack/reopen.html", 400)
    try:
        return answer_token_read(token)
    except TokenInvalid:
        if is_inert_ack_token(token):  # a preview's or test email's link: refused, saying so
            return _error_page(request, "ack/preview_link.html", 400)
        if _rate_limited(request):
            return _error_page(request, "ack/too_many.html", 429)
        _count_failure(request)
        return _error_page(request, "ack/invalid.html", 400)
    except TokenExpired:
        return _error_page(request, "ack/expired.html", 410)
    except DeveloperErased:
        return _error_page(request, "ack/erased.html", 410)


def _cookie(memo_id: int) -> str:
    return f"memo_ack_{memo_id}"


def _to_page(target: AnswerTarget, token: str) -> HttpResponse:
    response = redirect(reverse("ack-page", args=[target.memo.pk]))
    response.status_code = 303
    response.set_cookie(
        _cookie(target.memo.pk),
        token,
        max_age=COOKIE_AGE_S,
        path="/ack/",
        httponly=True,
        samesite="Lax",
        secure=not settings.DEBUG,
    )
    return _private(response)


def _shown(target: AnswerTarget) -> ShownText | None:
    """The memo as sent to the developer, as their page shows it; None when it cannot be
    shown (the admin's template over its render budget, the templates not the approved
    ones): then nothing may be answered on it either."""
    try:
        return target_text(target, ack_url(target.memo.pk, target.developer.pk))
    except Exception as exc:  # noqa: BLE001  (this page only; the reason goes to the log, by ids)
        reason = error_reason(exc, developer_context(target.developer))
        log.error("memo %s does not render for developer %s: %s", target.memo.pk, target.developer.pk, reason)
        return None


def _memo_page(
    request: HttpRequest, target: AnswerTarget, errors: dict[str, str] | None = None, status: int = 200
) -> HttpResponse:
    answers = answers_of(target)
    sent = _shown(target)
    if sent is None:
        return _error_page(request, "ack/unavailable.html", 503)
    language, subject, html = sent.language, sent.subject, sent.html
    memo = target.memo
    corrected_by = correction_sent(memo.pk)
    with translation.override(language):
        return _private(
            render(
                request,
                "ack/memo.html",
                {
                    "memo": memo,
                    "subject": subject,
                    "body": mark_safe(html),
                    "language": language,
                    "assent": assent_shown(sent_memo(memo), language),
                    "acknowledged": answers.get(Answer.Response.ACKNOWLEDGED),
                    "dispute": answers.get(Answer.Response.DISPUTES_REGION),
                    "traffic_dispute": answers.get(Answer.Response.DISPUTES_TRAFFIC),
                    "help": answers.get(Answer.Response.NEEDS_HELP),
                    "objection": answers.get(Answer.Response.OBJECTS),
                    "answered": bool(answers),
                    "withdrawn": memo.status == Memo.Status.WITHDRAWN,
                    "cancelled_at": _cancelled_at(memo),
                    "corrected_by": corrected_by,
                    "closed": memo.status in ANSWERS_CLOSED or corrected_by is not None,
                    "corrects": _corrects(target),
                    # The messages are English msgids (answers.py): shown in the page's language.
                    "errors": {field: gettext(message) for field, message in (errors or {}).items()},
                    "posted": request.POST,
                    "countries": sorted(countries, key=lambda c: name_order(str(c.name))),
                    "country": target.developer.country,
                    "no_longer_applies": memo_no_longer_applies(answers),
                    "traffic": _why_by_traffic(target),
                },
                status=status,
            )
        )


def _cancelled_at(memo: Memo) -> object:
    """When a cancelled memo was cancelled (its audit event), else None."""
    if memo.status != Memo.Status.CANCELLED:
        return None
    return (
        AuditEvent.objects.filter(action="memo.cancelled", object_type="memos.memo", object_id=str(memo.pk))
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )


def _corrects(target: AnswerTarget) -> dict[str, object] | None:
    """For a correction: the earlier memo it corrects, as sent to this developer (its
    subject and when it went), or only when it was sent if they were not sent it."""
    earlier_id = target.memo.supersedes_id
    if earlier_id is None:
        return None
    earlier = answer_target(memo_id=earlier_id, developer_id=target.developer.pk)
    if earlier is None:
        sent_at = Memo.objects.filter(pk=earlier_id).values_list("send_started_at", flat=True).first()
        return {"subject": "", "sent_at": sent_at}
    shown = _shown(earlier)
    return {"subject": shown.subject if shown is not None else "", "sent_at": earlier.delivery.sent_at}


def _why_by_traffic(target: AnswerTarget) -> list[dict[str, object]]:
    """The traffic that put the developer in the memo's audience, as the snapshot of the
    approved audience kept it, a country each, for the page to say in their language."""
    facts = traffic_of(target.memo, [target.developer.pk]).get(target.developer.pk, [])
    return [
        {"code": f.country, "name": countries.name(f.country), "days": f.days, "first": f.first, "last": f.last}
        for f in facts
    ]


def _answer(request: HttpRequest, target: AnswerTarget, token: str) -> HttpResponse:
    shown = _shown(target)
    if shown is None:  # an answer needs a page that can be shown
        return _error_page(request, "ack/unavailable.html", 503)
    try:
        answer_record(
            target=target,
            response=request.POST.get("response", ""),
            comment=request.POST.get("comment", ""),
            country=request.POST.get("country", ""),
            interacted=request.POST.get("interacted") == "1",
            ip_address=client_ip(request),
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
            # A console's link answers as relayed by its client, never as the email's.
            channel=Answer.Channel.CONSOLE if target.relayed_by else Answer.Channel.EMAIL_LINK,
            api_client=target.relayed_by,
            page_language=shown.language,
        )
    except AnswerInvalid as exc:
        return _memo_page(request, target, errors=exc.errors, status=400)
    except DeveloperErased:  # erased since the page was opened
        return _error_page(request, "ack/erased.html", 410)
    except NotApproved as exc:  # its templates were rewritten behind the approval
        log.error("answer refused: %s", exc)
        return _error_page(request, "ack/unavailable.html", 503)
    # Post/redirect/get: a reload shows the recorded answer, it does not post again.
    return _to_page(target, token)


@csrf_exempt
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def ack(request: HttpRequest, token: str) -> HttpResponse:
    """/ack/<token>/, the link in the email."""
    target = _read(request, token)
    if isinstance(target, HttpResponse):
        return target
    if request.method == "POST":
        return _answer(request, target, token)
    return _to_page(target, token)


@csrf_exempt
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def ack_page(request: HttpRequest, memo_id: int) -> HttpResponse:
    """/ack/memo/<id>/, the same page with the token in a cookie instead of the URL."""
    target = _cookie_target(request, memo_id)
    if isinstance(target, HttpResponse):
        return target
    if request.method == "POST":
        return _answer(request, target, request.COOKIES.get(_cookie(memo_id), ""))
    return _memo_page(request, target)


def _cookie_target(request: HttpRequest, memo_id: int) -> AnswerTarget | HttpResponse:
    """What the cookie of memo `memo_id`'s page stands for, or the page saying why it
    stands for nothing here (one for another memo: the link must be opened again)."""
    target = _read(request, request.COOKIES.get(_cookie(memo_id)))
    if isinstance(target, HttpResponse):
        return target
    if target.memo.pk != memo_id:
        return _error_page(request, "ack/reopen.html", 400)
    return target


@never_cache
@require_http_methods(["GET", "HEAD"])
def ack_receipt(request: HttpRequest, memo_id: int) -> HttpResponse:
    """/ack/memo/<id>/receipt/: the receipt of the developer's answers, a UTF-8 text file,
    for the holder of the page's cookie once they have answered."""
    target = _cookie_target(request, memo_id)
    if isinstance(target, HttpResponse):
        return target
    try:
        receipt = receipt_text(target)
    except NotApproved as exc:
        log.error("receipt refused: %s", exc)
        return _error_page(request, "ack/unavailable.html", 503)
    if receipt is None:
        with translation.override(target.developer.language or settings.LANGUAGE_CODE):
            message = gettext("There is no answer to give a receipt for yet: answer on the memo's page first.")
        return _private(HttpResponse(message + "\n", status=404, content_type="text/plain; charset=utf-8"))
    response = HttpResponse(receipt[1], content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="receipt-memo-{memo_id}.txt"'
    return _private(response)
