"""The audit log: who changed what, for changes made by people rather than the flow."""

from __future__ import annotations

from typing import Any

from memo_service.memos.models import AuditEvent


def audit_record(*, actor: Any, action: str, obj: Any, **detail: Any) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        detail=detail,
    )
