"""Big lists: the changelists never count every row, nor load the long text columns."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from memo_service.lib import admin_paging
from memo_service.memos.models import Delivery

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url", ["/admin/memos/delivery/", "/admin/developers/developer/", "/admin/memos/deliveryevent/"]
)
def test_a_changelist_counts_at_most_the_cap(admin_client, memo, developers, url, monkeypatch):
    monkeypatch.setattr(admin_paging, "COUNT_CAP", 2)
    for developer in developers.values():
        Delivery.objects.create(memo=memo, developer=developer, status="sent", status_reason="x" * 1000)
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(url).status_code == 200
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 3" in sql for sql in counts), counts


def test_the_delivery_list_does_not_load_long_text(admin_client, memo, developers):
    Delivery.objects.create(memo=memo, developer=developers["cn"], status="failed", status_reason="E" * 5000)
    with CaptureQueriesContext(connection) as queries:
        admin_client.get("/admin/memos/delivery/")
    listing = [
        q["sql"]
        for q in queries
        if "memos_delivery" in q["sql"] and "html_body" not in q["sql"] and "LIMIT 100" in q["sql"]
    ]
    assert listing and all('"status_reason"' not in sql for sql in listing)
