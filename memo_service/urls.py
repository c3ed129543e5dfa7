from django.contrib import admin
from django.urls import path, re_path
from django.views.generic import RedirectView

from memo_service import health
from memo_service.api.views import api
from memo_service.backends import outbox
from memo_service.memos import tracking
from memo_service.memos.answer import views

admin.site.site_header = "memo-service"
admin.site.site_title = "memo-service"
handler403 = "memo_service.lib.refusals.permission_denied"

urlpatterns = [
    # The answers' list was /admin/memos/acknowledgement/ before the model became Answer:
    # bookmarks and shared links keep working (filters included).
    re_path(
        r"^admin/memos/acknowledgement/(?P<rest>.*)$",
        RedirectView.as_view(url="/admin/memos/answer/%(rest)s", query_string=True, permanent=True),
    ),
    path("admin/", admin.site.urls),
    path("ack/memo/<int:memo_id>/", views.ack_page, name="ack-page"),
    path("ack/memo/<int:memo_id>/receipt/", views.ack_receipt, name="ack-receipt"),
    path("ack/<str:token>/", views.ack, name="ack"),
    # anymail's tracking webhooks of the configured providers, through our wrapper (basic
    # auth: ANYMAIL_WEBHOOK_SECRET); nothing else of anymail's (inbound mail, combined
    # views) is routed: every other /anymail/ URL is a 404.
    path("anymail/<str:esp>/tracking/", tracking.tracking_webhook, name="tracking-webhook"),
    path("api/v1/", api.urls),
    path("healthz", health.healthz, name="healthz"),
    path("outbox/", outbox.outbox_list, name="outbox"),
    path("outbox/<str:name>", outbox.outbox_message, name="outbox-message"),
    path("outbox/<str:name>/raw", outbox.outbox_raw, name="outbox-raw"),
]
