"""Big lists: the changelists never count every row, nor load the long text columns."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from memo_service.lib import admin_paging
from tests.conftest import add_region, sent_memo

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url", ["/admin/memos/delivery/", "/admin/developers/developer/", "/admin/memos/deliveryevent/"]
)
def test_a_changelist_counts_at_most_the_cap(admin_client, memo, developers, url, monkeypatch):
    monkeypatch.setattr(admin_paging, "COUNT_CAP", 2)
    add_region(memo, "US")
    sent_memo(memo)  # three emails, past the cap
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(url).status_code == 200
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 3" in sql for sql in counts), counts


def test_the_delivery_list_does_not_load_long_text(admin_client, memo, developers):
    sent_memo(memo, {developers["cn"]: "failed"}, reasons={developers["cn"]: "E" * 5000})
    with CaptureQueriesContext(connection) as queries:
        admin_client.get("/admin/memos/delivery/")
    listing = [
        q["sql"]
        for q in queries
        if "memos_delivery" in q["sql"] and "html_body" not in q["sql"] and "LIMIT 100" in q["sql"]
    ]
    assert listing and all('"status_reason"' not in sql for sql in listing)
