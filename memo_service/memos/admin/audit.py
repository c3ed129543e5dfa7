"""The audit log: read-only."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from memo_service.memos.admin.readonly import ReadOnlyAdmin
from memo_service.memos.models import (
    AuditEvent,
    Memo,
)


class AuditMemoFilter(admin.SimpleListFilter):
    """Events about one memo: on the memo itself, or naming it (a dispute's country change)."""

    title = "memo"
    parameter_name = "memo"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(pk), title) for pk, title in Memo.objects.order_by("-created_at").values_list("pk", "title")[:100]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        memo = Memo.objects.filter(pk=value).only("slug").first() if value.isdigit() else None
        if memo is None:
            return queryset.none()
        return queryset.filter(Q(object_type="memos.memo", object_id=str(memo.pk)) | Q(detail__memo=memo.slug))


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "action", "about", "detail"]
    list_filter = [AuditMemoFilter, "action"]
    list_select_related = ["actor"]
    search_fields = ["action", "actor__username", "object_id"]

    @admin.display(description="about")
    def about(self, event: AuditEvent) -> str:
        """The object by its name, linked to its page (not "memos.memo 2")."""
        model = apps.get_model(event.object_type) if event.object_type.count(".") == 1 else None
        obj = model._default_manager.filter(pk=event.object_id).first() if model is not None else None
        if obj is None:
            return f"{event.object_type} {event.object_id}"
        assert model is not None  # obj was found through it
        label = f"{model._meta.verbose_name} “{obj}”"
        try:
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[obj.pk])
        except NoReverseMatch:  # a model without an admin page
            return label
        return format_html('<a href="{}">{}</a>', url, label)
