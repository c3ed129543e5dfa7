from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from memo_service.api.auth import api_clients_forget
from memo_service.api.models import ApiClient, Scope


class ApiClientForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
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
        if not change:
            obj._issued_token = obj.token_rotate()  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)
        api_clients_forget()

    def response_add(self, request: HttpRequest, obj: ApiClient, post_url_continue: str | None = None) -> HttpResponse:
        token = getattr(obj, "_issued_token", None)
        if token is None:
            return super().response_add(request, obj, post_url_continue)
        return self._tokens_page(request, [(obj.name, token)])

    @admin.action(description="Issue new tokens (the old ones stop working)")
    def rotate_tokens(self, request: HttpRequest, queryset: QuerySet[ApiClient]) -> HttpResponse:
        issued = []
        for client in queryset:
            token = client.token_rotate()
            client.save(update_fields=["token_digest", "token_prefix"])
            issued.append((client.name, token))
        api_clients_forget()
        return self._tokens_page(request, issued)

    def _tokens_page(self, request: HttpRequest, issued: list[tuple[str, str]]) -> HttpResponse:
        """New tokens, shown once in the page itself: a message would carry them in the
        messages cookie (or the session), stored by the browser and sent back."""
        response = TemplateResponse(
            request,
            "admin/api/apiclient/tokens_issued.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Copy the new tokens",
                "issued": issued,
            },
        )
        add_never_cache_headers(response)
        return response
