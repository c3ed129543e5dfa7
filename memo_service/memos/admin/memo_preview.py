"""The memo's preview page: the email as one developer of the audience gets it, in the
language asked for, and a test of it sent to the person looking."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse

from memo_service.developers.models import Developer
from memo_service.memos.admin.memo_pages import MemoPages
from memo_service.memos.audience import audience_explain, audience_reasons, memo_audience
from memo_service.memos.audit import signed_in
from memo_service.memos.compose import sandbox
from memo_service.memos.compose.context import developer_context
from memo_service.memos.compose.emails import RenderedEmail
from memo_service.memos.compose.links import inert_ack_url
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.compose.sources import FALLBACK_LANGUAGE
from memo_service.memos.compose.trial_email import memo_send_test
from memo_service.memos.models import Memo
from memo_service.memos.snapshot import traffic_of

# The preview's developer list: enough to pick from, small enough to read; the search
# box finds anyone else in the audience.
PREVIEW_CHOICES = 50


@dataclass(frozen=True)
class PreviewChoice:
    """What the preview's form asks for (a POST, the test send, asks as its GET did)."""

    languages: list[str]  # the memo's: English and each translation's
    language: str | None  # one of them, or None for the developer's own
    q: str  # the search box
    in_by: str  # "traffic_only", "account", or anything else for either
    developer: str | None  # the external id picked


@dataclass(frozen=True)
class PreviewRendering:
    email: RenderedEmail | None
    language: str | None  # the language rendered, or the one asked for
    error: str | None  # why the templates did not render, with their line


def preview_choice(request: HttpRequest, memo: Memo) -> PreviewChoice:
    languages = [FALLBACK_LANGUAGE, *(t.language for t in memo.translations.all())]
    params = request.POST if request.method == "POST" else request.GET
    language = params.get("language")
    return PreviewChoice(
        languages=languages,
        language=language if language in languages else None,
        q=params.get("q", "").strip()[:100],
        in_by=params.get("in_by", "") if memo.audience_basis != Memo.Basis.ACCOUNT else "",
        developer=params.get("developer"),
    )


def preview_sample(memo: Memo, choice: PreviewChoice) -> list[Developer]:
    """The developers to pick from: the audience, narrowed by how they are in and by the search."""
    audience = memo_audience(memo)
    if choice.in_by == "traffic_only":  # in by traffic, and not by the account's country
        audience = audience.exclude(country__in=list(audience_reasons(memo)))
    elif choice.in_by == "account":
        audience = audience.filter(country__in=list(audience_reasons(memo)))
    if q := choice.q:
        audience = audience.filter(Q(external_id__icontains=q) | Q(name__icontains=q) | Q(email__icontains=q))
    return list(audience.order_by("id")[:PREVIEW_CHOICES])


def preview_developer(sample: list[Developer], choice: PreviewChoice) -> Developer | None:
    """The developer picked; a search that does not list them shows its first match. One
    outside the list is found by external id; with none picked, the list's first."""
    listed = {d.external_id: d for d in sample}
    wanted = choice.developer
    if choice.q and sample and wanted not in listed:
        wanted = sample[0].external_id
    if wanted in listed:
        return listed[wanted]
    found = Developer.objects.filter(external_id=wanted).first() if wanted else None
    return found or (sample[0] if sample else None)


def preview_render(memo: Memo, developer: Developer | None, language: str | None) -> PreviewRendering:
    if developer is None:
        return PreviewRendering(email=None, language=language, error=None)
    context = developer_context(developer, traffic_of(memo, [developer.pk]).get(developer.pk, ()))
    if language:
        context["language"] = language
    try:
        # A dead link of the real one's shape: a preview must not let anyone answer
        # for the developer, nor let the template see it is a preview.
        used, email = MemoRenderer(memo).render(context, inert_ack_url(memo.pk, developer.pk))
    except Exception as exc:  # shown to the admin, with its line
        error = f"line {sandbox.template_line(exc) or '?'}: {sandbox.describe(exc)}"
        return PreviewRendering(email=None, language=language, error=error)
    return PreviewRendering(email=email, language=used, error=None)


class MemoPreviewPage(MemoPages):
    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        memo = self._memo(request, object_id)
        choice = preview_choice(request, memo)
        sample = preview_sample(memo, choice)
        developer = preview_developer(sample, choice)
        shown = preview_render(memo, developer, choice.language)
        if request.method == "POST" and shown.email is not None:
            assert developer is not None  # an email is rendered for someone
            self._send_test(request, memo, shown.email, developer, shown.language)
        return self._page(
            request,
            memo,
            "admin/memos/memo/preview.html",
            f"Preview “{memo.title}”",
            sample=sample,
            developer=developer,
            languages=choice.languages,
            language=shown.language,
            email=shown.email,
            error=shown.error,
            q=choice.q,
            in_by=choice.in_by,
            why=audience_explain(memo, developer) if developer is not None else "",
            can_send=self.has_send_permission(request, memo),
        )

    def _send_test(
        self, request: HttpRequest, memo: Memo, email: RenderedEmail, developer: Developer, language: str | None
    ) -> None:
        """The preview's "Send a test": the email shown, to the address of the person looking."""
        if not self.has_send_permission(request, memo):
            raise PermissionDenied("Sending a test email takes the Composer role.")
        person = signed_in(request)
        if not person.email:
            messages.error(request, "Your account has no email address to send the test to.")
            return
        memo_send_test(
            memo=memo, email=email, to=person.email, by=person, developer=developer.external_id, language=language
        )
        messages.success(request, f"Test sent to {person.email}.")
