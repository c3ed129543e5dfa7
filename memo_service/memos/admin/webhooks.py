"""Outbound webhook endpoints and the messages sent to them."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from memo_service.memos.admin.readonly import ReadOnlyAdmin
from memo_service.memos.models import (
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)
from memo_service.memos.webhooks.netguard import TargetRefused, target_address


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")
    events = forms.MultipleChoiceField(choices=WebhookEndpoint.Event.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "events", "secret", "is_active"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        try:
            target_address(url)  # only public targets (memos/webhooks/netguard.py)
        except TargetRefused as exc:
            raise forms.ValidationError(f"Refused: {exc}.") from None
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["url", "events", "is_active", "created_at"]


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["at", "status_code", "error", "duration_ms"]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(WebhookMessage)
class WebhookMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "event", "endpoint", "status", "attempts", "next_attempt_at", "created_at", "delivered_at"]
    list_filter = ["status", "event"]
    inlines = [WebhookAttemptInline]
