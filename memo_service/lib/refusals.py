"""A refusal that explains itself: a 403 inside the admin says what was refused, why, and
which role may do it, on an admin page with the usual navigation (not a bare "403
Forbidden"). Elsewhere (the developer's pages, the API) Django's own answer stands."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views import defaults


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    user = getattr(request, "user", None)
    if not request.path.startswith("/admin/") or user is None or not user.is_staff:
        return defaults.permission_denied(request, exception or PermissionDenied())
    return TemplateResponse(
        request,
        "admin/refused.html",
        {
            **admin.site.each_context(request),
            "title": "Not allowed",
            "reason": str(exception or "")
            or "Your roles do not allow this. docs/composing.md (“Who may do what”) lists what each role may do.",
        },
        status=403,
    )
