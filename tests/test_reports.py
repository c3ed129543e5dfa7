"""The funnel an admin and `memo_status --json` show."""

import datetime as dt
import json

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from memo_service.memos.models import Memo
from memo_service.memos.send.control import memo_cancel
from memo_service.memos.send.dispatch import memo_send_start
from tests.conftest import answered, approve, make_developer, sent_memo

pytestmark = pytest.mark.django_db


def send_funnel(memo, developers, *, ru="sent", late=0, at=None):
    """Sent `at` (an hour ago by default): CN: delivered + acknowledged (now), bounced;
    RU: `ru`, failed (the provider refused it: 400); `late` more developers in CN,
    delivered."""
    cn2 = make_developer("cn-2", "CN")
    ru2 = make_developer("ru-2", "RU")
    outcomes = {developers["cn"]: "delivered", cn2: "bounced", developers["ru"]: ru, ru2: "failed"}
    outcomes |= {make_developer(f"late-{n:02d}", "CN"): "delivered" for n in range(late)}
    sent_memo(memo, outcomes, reasons={ru2: "400"}, at=at or timezone.now() - dt.timedelta(hours=1))
    answered(memo, developers["cn"])
    return memo


@pytest.fixture
def funnel_memo(memo, developers):
    return send_funnel(memo, developers)


def test_memo_status_json_prints_the_funnel_in_total_and_per_country(funnel_memo, capsys):
    call_command("memo_status", funnel_memo.slug, "--json")
    funnel = json.loads(capsys.readouterr().out)
    assert {k: funnel[k] for k in ["targeted", "sent", "delivered", "bounced", "failed", "acknowledged"]} == {
        "targeted": 4,
        "sent": 3,
        "delivered": 1,
        "bounced": 1,
        "failed": 1,
        "acknowledged": 1,
    }
    assert funnel["by_country"]["CN"] | {} == {
        "targeted": 2,
        "sent": 2,
        "delivered": 1,
        "bounced": 1,
        "failed": 0,
        "outcome_unknown": 0,
        "pending": 0,
        "cancelled": 0,
        "acknowledged": 1,
        "acknowledged_suspected": 0,
        "disputed": 0,
        "needs_help": 0,
        "objects": 0,
        "exempt": 0,
    }
    assert funnel["by_country"]["RU"]["failed"] == 1 and funnel["by_country"]["RU"]["acknowledged"] == 0


def test_memo_status_prints_a_table_by_id(funnel_memo, capsys):
    call_command("memo_status", str(funnel_memo.pk))
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "regions-blocked (sent)"
    assert out.splitlines()[2].split() == ["all", "4", "3", "1", "1", "1", "0", "0", "0", "1", "0", "0", "0", "0", "0"]


def test_the_dashboard_shows_the_funnel_per_country_and_a_chart(admin_client, funnel_memo):
    page = admin_client.get(reverse("admin:memos_memo_dashboard", args=[funnel_memo.pk])).content.decode()
    assert '<th data-key="acknowledged_suspected">of which possibly automated</th>' in page
    assert ">needs_help<" not in page and ">asked for help</th>" in page
    # CN: 2 targeted, 2 sent, 1 delivered, 1 bounced, 0 failed, 0 cancelled, 1 acknowledged, …, 0 objected,
    # 1 not answered (bounced: the provider took it), 0 not sent, 1 of 2 answered
    assert (
        "<tr><td>CN</td><td>2</td><td>2</td><td>1</td><td>1</td><td>0</td><td>0</td><td>1</td><td>0</td>"
        "<td>0</td><td>0</td><td>0</td><td>1</td><td>0</td><td>1 (50 %)</td></tr>"
    ) in page
    # RU: 2 targeted, 1 sent, 1 failed; the failed one is not sent, not "not answered": 0 of the 1 sent answered
    assert (
        "<tr><td>RU</td><td>2</td><td>1</td><td>0</td><td>0</td><td>1</td><td>0</td><td>0</td><td>0</td>"
        "<td>0</td><td>0</td><td>0</td><td>1</td><td>1</td><td>0 (0 %)</td></tr>"
    ) in page
    assert "<svg" in page and "1 acknowledged of 4" in page and "deadline" in page


def test_the_chart_spans_the_time_elapsed_and_marks_a_later_deadline_at_its_edge(memo, developers):
    from memo_service.memos.report.reports import ack_chart_svg

    Memo.objects.filter(pk=memo.pk).update(ack_deadline=timezone.now() + dt.timedelta(days=210))  # the draft's
    funnel_memo = send_funnel(memo, developers, at=timezone.now() - dt.timedelta(days=2))
    svg = ack_chart_svg(Memo.objects.get(pk=funnel_memo.pk))
    assert "(in 209 days) →" in svg and ">now</text>" in svg
    # the acknowledgement (just now) is drawn at the right edge, not a sliver from the left
    polyline = svg.split('points="')[1].split('"')[0].split()
    assert float(polyline[-2].split(",")[0]) > 600


def test_the_dashboard_lists_who_has_not_answered_paged_and_as_csv(admin_client, memo, developers, settings):
    from memo_service.memos.report import reports

    funnel_memo = send_funnel(memo, developers, late=60)
    answered(funnel_memo, developers["ru"], "needs_help", comment="Which regions?")
    url = reverse("admin:memos_memo_dashboard", args=[funnel_memo.pk])
    first = admin_client.get(url).content.decode()
    # 64 targeted: cn-1 acknowledged, ru-1 asked for help; 62 still owe an answer, of whom
    # ru-2 was never sent the memo (the provider refused it): "not sent", not "not answered"
    assert "Not answered yet (61)" in first and "page 1 of 2" in first
    assert first.count("<td>late-") == reports.UNANSWERED_PAGE - 1  # cn-2 comes first
    assert "Not sent (1)" in first and "<td>ru-2</td>" in first.split('id="not-sent-list"')[1]
    assert "<td>ru-2</td>" not in first.split('id="unanswered-list"')[1].split("</table>")[0]
    assert "<td>late-59</td>" in admin_client.get(url, {"page": 2}).content.decode()
    csv = b"".join(admin_client.get(reverse("admin:memos_memo_unanswered", args=[funnel_memo.pk])).streaming_content)
    lines = csv.decode().splitlines()
    assert len(lines) == 63 and lines[0].startswith("external_id,name,email")
    assert not any(line.startswith(("cn-1,", "ru-1,")) for line in lines)


def test_a_cancelled_send_says_so_in_its_progress(admin_client, memo, developers):
    funnel_memo = send_funnel(memo, developers, ru="queued")
    memo_cancel(memo=funnel_memo, by=None)  # RU's still queued
    progress = admin_client.get(reverse("admin:memos_memo_progress", args=[funnel_memo.pk])).json()
    assert progress["cancelled"] == 1 and progress["finished"]
    assert progress["summary"] == "Cancelled: 2 of 4 were sent before the cancel, 1 never will be, 1 failed."
    page = admin_client.get(reverse("admin:memos_memo_dashboard", args=[funnel_memo.pk])).content.decode()
    assert "Cancelled: 2 of 4" in page and "never sent (cancelled)" in page


def test_just_after_confirming_a_send_the_progress_says_it_is_being_prepared(admin_client, memo):
    approve(memo)
    memo_send_start(memo=memo, dispatch_in_worker=False)  # its dispatch not yet begun
    progress = admin_client.get(reverse("admin:memos_memo_progress", args=[memo.pk])).json()
    assert progress["summary"] == "Preparing the send: 0 emails queued so far." and not progress["finished"]


def test_the_progress_endpoint_reports_the_send(admin_client, funnel_memo):
    progress = admin_client.get(reverse("admin:memos_memo_progress", args=[funnel_memo.pk])).json()
    assert (progress["total"], progress["queued"], progress["sent"], progress["failed"]) == (4, 0, 3, 1)


def test_the_evidence_export_lives_with_the_evidence_and_reads_nothing_of_the_reports():
    """One job a room: report/ reads the evidence package (the funnel's answers by
    channel come from the export), never the other way round."""
    import ast
    from pathlib import Path

    from memo_service.memos.evidence import export
    from memo_service.memos.report import reports

    assert not any(hasattr(reports, name) for name in ("evidence_csv", "evidence_json", "evidence_records"))
    assert reports.answers_by_channel is export.answers_by_channel
    for path in Path(export.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.startswith("memo_service.memos.report") for n in names), path.name
