"""What the memo's own pages share: who may use them, the memo a page is about, and the
admin page around its template."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from memo_service.memos.models import Memo

# What a refused button says (refusals.py shows it inside the admin): who may do it.
ROLE_NEEDED = {
    "view": "Reading memos takes the Viewer, Composer or Approver role.",
    "change": "Writing memos and asking for approval take the Composer role.",
    "send": "Sending, scheduling, pausing, resuming and cancelling memos take the Composer role.",
    "approve": "Approving memos takes the Approver role, and someone other than the memo's author or last editor.",
    "export": "The evidence holds addresses, IP addresses and user agents: exporting it takes the Composer or "
    "Approver role, not Viewer.",
}


def memo_url(memo: Memo) -> str:
    return reverse("admin:memos_memo_change", args=[memo.pk])


class MemoPages(admin.ModelAdmin):
    """The base of MemoAdmin's groups of pages (send, preview, report, audience)."""

    def has_send_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        return request.user.has_perm("memos.send_memo")

    def has_approve_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        return request.user.has_perm("memos.approve_memo")

    def has_export_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        # The evidence holds addresses, IPs and user agents: not for the Viewer role.
        return request.user.has_perm("memos.change_memo") or request.user.has_perm("memos.approve_memo")

    def _memo(self, request: HttpRequest, object_id: str, permission: str = "view") -> Memo:
        """The page's memo, or a refusal naming the role its `permission` takes."""
        memo = get_object_or_404(Memo, pk=object_id)
        if not getattr(self, f"has_{permission}_permission")(request, memo):
            raise PermissionDenied(ROLE_NEEDED[permission])
        return memo

    def _page(self, request: HttpRequest, memo: Memo, template: str, title: str, **context: Any) -> TemplateResponse:
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "memo": memo,
                "original": memo,
                "change_url": memo_url(memo),
                "title": title,
                **context,
            },
        )
