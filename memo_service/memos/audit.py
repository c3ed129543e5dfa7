"""The audit log: who changed what, for changes made by people rather than the flow."""

from __future__ import annotations

from typing import Any, TypeAlias

from django.contrib.auth.models import User
from django.http import HttpRequest

from memo_service.memos.models import AuditEvent

# Who did something: a signed-in person, or None for the flow itself (beat, a worker,
# a management command run with no --by).
Actor: TypeAlias = User | None


def audit_record(*, actor: Actor, action: str, obj: Any, **detail: Any) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=actor if actor is not None and actor.pk else None,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        detail=detail,
    )


def signed_in(request: HttpRequest) -> User:
    """The person an admin page's request comes from (the admin lets in only signed-in
    staff, so a request with no one behind it is a bug, not a visitor)."""
    user = request.user
    assert isinstance(user, User), "an admin page reached without a signed-in user"
    return user
