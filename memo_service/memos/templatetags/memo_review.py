"""{% awaiting_approval %}: the admin index's and the memo list's note to an approver of
the memos that await them."""

from __future__ import annotations

from typing import Any

from django import template
from django.contrib.auth.models import User

from memo_service.memos.approval import memos_awaiting

register = template.Library()


@register.inclusion_tag("admin/memos/memo/review_awaiting.html", takes_context=True)
def awaiting_approval(context: dict[str, Any]) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    return {"awaiting": memos_awaiting(user) if isinstance(user, User) else []}
