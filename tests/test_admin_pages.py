"""Every admin page an admin can reach renders, with data in it."""

import pytest
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse

from memo_service.api.models import ApiClient
from memo_service.memos.models import AuditEvent, WebhookEndpoint
from tests.conftest import answered, sent_memo

pytestmark = pytest.mark.django_db


@pytest.fixture
def everything(memo, developers):
    sent_memo(memo, {developers["cn"]: "delivered"})  # its tracking event too
    answered(memo, developers["ru"], "disputes_region", country="KZ")
    WebhookEndpoint.objects.create(url="https://platform.example/hooks", events=["memo.acknowledged"])
    client = ApiClient(name="sync")
    client.token_rotate()
    client.save()
    AuditEvent.objects.create(action="memo.created", object_type="memos.memo", object_id=str(memo.pk))
    return memo


def test_every_changelist_add_and_change_page_renders(admin_client, admin_user, everything):
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        base = f"admin:{opts.app_label}_{opts.model_name}"
        assert admin_client.get(reverse(f"{base}_changelist")).status_code == 200, opts.label
        if model_admin.has_add_permission(request):
            assert admin_client.get(reverse(f"{base}_add")).status_code == 200, opts.label
        obj = model_admin.get_queryset(request).first()
        if obj is not None:
            # (a dispute's page is its case's: followed there)
            assert admin_client.get(reverse(f"{base}_change", args=[obj.pk]), follow=True).status_code == 200, (
                opts.label
            )


def test_the_memo_pages_render(admin_client, everything):
    for name in ["send", "schedule", "preview", "dashboard", "progress", "audience", "explain"]:
        response = admin_client.get(reverse(f"admin:memos_memo_{name}", args=[everything.pk]))
        assert response.status_code == 200, name
    assert admin_client.get(reverse("admin:developers_developer_import")).status_code == 200
    assert admin_client.get("/outbox/").status_code == 200
