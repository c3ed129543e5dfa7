from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from memo_service.api.models import ApiClient, Scope
from memo_service.api.views import api_clients_forget


class ApiClientForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="What the client may call; a call outside them gets 403.",
    )

    class Meta:
        model = ApiClient
        fields = ["name", "is_active", "scopes"]


@admin.register(ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    form = ApiClientForm
    list_display = ["name", "token_prefix", "is_active", "scopes", "created_at", "last_used_at"]
    readonly_fields = ["token_prefix", "created_at", "last_used_at"]
    actions = ["rotate_tokens"]

    def save_model(self, request: HttpRequest, obj: ApiClient, form: Any, change: bool) -> None:
        token = obj.token_rotate() if not change else None
        super().save_model(request, obj, form, change)
        api_clients_forget()
        if token:
            messages.warning(request, f"Token for {obj.name}: {token} — copy it now, it is not shown again.")

    @admin.action(description="Issue new tokens (the old ones stop working)")
    def rotate_tokens(self, request: HttpRequest, queryset: QuerySet[ApiClient]) -> None:
        for client in queryset:
            token = client.token_rotate()
            client.save(update_fields=["token_digest", "token_prefix"])
            messages.warning(request, f"New token for {client.name}: {token} — copy it now, it is not shown again.")
        api_clients_forget()
