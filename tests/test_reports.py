"""The funnel an admin and `memo_status --json` show."""

import json

import pytest
from django.core.management import call_command
from django.urls import reverse

from memo_service.memos.models import Acknowledgement, Delivery, Memo
from tests.conftest import make_developer

pytestmark = pytest.mark.django_db


@pytest.fixture
def funnel_memo(memo, developers):
    """CN: delivered + acknowledged, bounced; RU: sent, failed."""
    Memo.objects.filter(pk=memo.pk).update(status="sending", content_hash="h" * 64)
    cn2 = make_developer("cn-2", "CN")
    ru2 = make_developer("ru-2", "RU")
    Delivery.objects.create(memo=memo, developer=developers["cn"], status="delivered", country="CN")
    Delivery.objects.create(memo=memo, developer=cn2, status="bounced", country="CN")
    Delivery.objects.create(memo=memo, developer=developers["ru"], status="sent", country="RU")
    Delivery.objects.create(memo=memo, developer=ru2, status="failed", last_error="400", country="RU")
    Acknowledgement.objects.create(memo=memo, developer=developers["cn"], content_hash="h" * 64)
    return memo


def test_memo_status_json_prints_the_funnel_in_total_and_per_country(funnel_memo, capsys):
    call_command("memo_status", funnel_memo.slug, "--json")
    funnel = json.loads(capsys.readouterr().out)
    assert {k: funnel[k] for k in ["targeted", "sent", "delivered", "bounced", "failed", "acknowledged"]} == {
        "targeted": 4, "sent": 3, "delivered": 1, "bounced": 1, "failed": 1, "acknowledged": 1
    }
    assert funnel["by_country"]["CN"] | {} == {
        "targeted": 2, "sent": 2, "delivered": 1, "bounced": 1, "failed": 0,
        "outcome_unknown": 0, "pending": 0, "acknowledged": 1,
        "acknowledged_suspected": 0, "disputed": 0, "needs_help": 0, "exempt": 0,
    }
    assert funnel["by_country"]["RU"]["failed"] == 1 and funnel["by_country"]["RU"]["acknowledged"] == 0


def test_memo_status_prints_a_table_by_id(funnel_memo, capsys):
    call_command("memo_status", str(funnel_memo.pk))
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "regions-blocked (sending)"
    assert out.splitlines()[2].split() == ["all", "4", "3", "1", "1", "1", "0", "0", "1", "0", "0", "0", "0"]


def test_the_dashboard_shows_the_funnel_per_country_and_a_chart(admin_client, funnel_memo):
    page = admin_client.get(reverse("admin:memos_memo_dashboard", args=[funnel_memo.pk])).content.decode()
    assert "<th>acknowledged_suspected</th>" in page
    assert "<tr><td>CN</td><td>2</td><td>2</td><td>1</td><td>1</td><td>0</td><td>1</td><td>0</td><td>0</td><td>0</td></tr>" in page
    assert "<svg" in page and "1 acknowledged of 4" in page and "deadline" in page


def test_the_progress_endpoint_reports_the_send(admin_client, funnel_memo):
    progress = admin_client.get(reverse("admin:memos_memo_progress", args=[funnel_memo.pk])).json()
    assert (progress["total"], progress["queued"], progress["sent"], progress["failed"]) == (4, 0, 3, 1)
