"""The memo's preview page: the email as one developer of the audience gets it, in the
language asked for, and a test of it sent to the person looking."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse

from memo_service.developers.models import Developer
from memo_service.memos.admin.memo_pages import MemoPages
from memo_service.memos.audience import audience_explain, audience_reasons, memo_audience
from memo_service.memos.compose import sandbox
from memo_service.memos.compose.context import developer_context
from memo_service.memos.compose.links import inert_ack_url
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.compose.sources import FALLBACK_LANGUAGE
from memo_service.memos.compose.trial_email import memo_send_test
from memo_service.memos.models import Memo
from memo_service.memos.snapshot import traffic_of

# The preview's developer list: enough to pick from, small enough to read; the search
# box finds anyone else in the audience.
PREVIEW_CHOICES = 50


class MemoPreviewPage(MemoPages):
    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id)
        languages = [FALLBACK_LANGUAGE, *(t.language for t in memo.translations.all())]
        query = request.POST if request.method == "POST" else request.GET
        params: Mapping[str, Any] = query  # the request's, or them with a developer picked below
        language = params.get("language") if params.get("language") in languages else None
        q = params.get("q", "").strip()[:100]
        audience = memo_audience(memo)
        in_by = params.get("in_by", "") if memo.audience_basis != Memo.Basis.ACCOUNT else ""
        if in_by == "traffic_only":  # in by traffic, and not by the account's country
            audience = audience.exclude(country__in=list(audience_reasons(memo)))
        elif in_by == "account":
            audience = audience.filter(country__in=list(audience_reasons(memo)))
        if q:
            audience = audience.filter(Q(external_id__icontains=q) | Q(name__icontains=q) | Q(email__icontains=q))
        sample = list(audience.order_by("id")[:PREVIEW_CHOICES])
        if q and sample and params.get("developer") not in {d.external_id for d in sample}:
            params = {**query.dict(), "developer": sample[0].external_id}  # show the first match
        developer = next((d for d in sample if d.external_id == params.get("developer")), None)
        if developer is None and params.get("developer"):
            developer = Developer.objects.filter(external_id=params["developer"]).first()
        developer = developer or (sample[0] if sample else None)
        email = error = None
        if developer is not None:
            context = developer_context(developer, traffic_of(memo, [developer.pk]).get(developer.pk, ()))
            if language:
                context["language"] = language
            try:
                # A dead link of the real one's shape: a preview must not let anyone answer
                # for the developer, nor let the template see it is a preview.
                used, email = MemoRenderer(memo).render(context, inert_ack_url(memo.pk, developer.pk))
                language = used
            except Exception as exc:  # shown to the admin, with its line
                error = f"line {sandbox.template_line(exc) or '?'}: {sandbox.describe(exc)}"
        if request.method == "POST" and email is not None:
            if not self.has_send_permission(request, memo):
                raise PermissionDenied("Sending a test email takes the Composer role.")
            assert request.user.is_authenticated  # the admin lets in only signed-in staff
            if not request.user.email:
                messages.error(request, "Your account has no email address to send the test to.")
            else:
                memo_send_test(
                    memo=memo,
                    email=email,
                    to=request.user.email,
                    by=request.user,
                    developer=developer.external_id if developer else None,
                    language=language,
                )
                messages.success(request, f"Test sent to {request.user.email}.")
        return self._page(
            request,
            memo,
            "admin/memos/memo/preview.html",
            f"Preview “{memo.title}”",
            sample=sample,
            developer=developer,
            languages=languages,
            language=language,
            email=email,
            error=error,
            q=q,
            in_by=in_by,
            why=audience_explain(memo, developer) if developer is not None else "",
            can_send=self.has_send_permission(request, memo),
        )
