"""Cohorts from observed API traffic: feeds in (import_traffic, the bulk API), the
audience rule, and the reason each developer is told, from the admin to their page."""

from __future__ import annotations

import datetime as dt
import email
import gzip
import io
import json
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from memo_service.api.models import ApiClient, Scope
from memo_service.developers import geo
from memo_service.developers.erasure import developer_erase
from memo_service.developers.models import TrafficObservation
from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.audience import audience_counts, audience_explain, memo_audience
from memo_service.memos.evidence.export import evidence_records
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.dispatch import memo_dispatch, memo_send_start
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import approve, make_developer, make_memo

pytestmark = pytest.mark.django_db

TODAY = timezone.now().date()
D1, D2, D3 = (TODAY - dt.timedelta(days=n) for n in (3, 2, 1))
# Registry data inside iptocc: China's CERNET, Yandex in Russia, Google in the US.
CN_IP, RU_IP, US_IP = "1.2.4.8", "5.255.255.5", "8.8.8.8"


def run(*args: str, stdin: bytes | None = None) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        saved = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        call_command("import_traffic", *args, stdout=out, stderr=err)
    finally:
        if stdin is not None:
            sys.stdin = saved
    return out.getvalue(), err.getvalue()


def rollups() -> set[tuple[str, str, dt.date, int, str, str]]:
    return {
        (t.developer.external_id, t.country, t.day, t.requests, t.source, t.geo_database)
        for t in TrafficObservation.objects.select_related("developer")
    }


def feed(tmp_path, text: str, name: str = "feed.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_raw_log_lines_are_resolved_and_summed_into_daily_rollups_with_no_address_kept(tmp_path, developers):
    path = feed(
        tmp_path,
        "external_id,timestamp,ip\n"
        f"us-1,{D1}T10:00:00Z,{CN_IP}\n"
        f"us-1,{D1}T23:59:59Z,{CN_IP}\n"
        f"us-1,{D2}T01:00:00+00:00,{RU_IP}\n"
        f"cn-1,{int(dt.datetime.combine(D3, dt.time(12), dt.UTC).timestamp())},{US_IP}\n",
    )
    out, err = run(path, "--source", "gateway")
    database = geo.geo_database().name
    assert database.startswith("iptocc 3.")
    assert rollups() == {
        ("us-1", "CN", D1, 2, "gateway", database),
        ("us-1", "RU", D2, 1, "gateway", database),
        ("cn-1", "US", D3, 1, "gateway", database),
    }
    assert "Imported 4 of 4 lines as 3 daily rollups" in out and err == ""
    with connection.cursor() as cursor:  # no column of the table holds an address
        cursor.execute(f"SELECT * FROM {TrafficObservation._meta.db_table}")
        assert not any(ip in str(row) for row in cursor.fetchall() for ip in (CN_IP, RU_IP, US_IP))


def test_importing_a_day_of_a_source_again_replaces_it_and_other_sources_stay(tmp_path, developers):
    first = feed(tmp_path, f"external_id,day,country,requests\nus-1,{D1},CN,100\nus-1,{D1},RU,5\n")
    run(first, "--source", "cdn")
    run(feed(tmp_path, f"external_id,day,country,requests\nus-1,{D1},CN,7\n", "other.csv"), "--source", "gateway")
    run(first, "--source", "cdn")  # the same file twice: no doubling
    assert rollups() == {
        ("us-1", "CN", D1, 100, "cdn", ""),
        ("us-1", "RU", D1, 5, "cdn", ""),
        ("us-1", "CN", D1, 7, "gateway", ""),
    }
    run(feed(tmp_path, f"external_id,day,country,requests\nus-1,{D1},CN,40\n", "fix.csv"), "--source", "cdn")
    assert {r for r in rollups() if r[4] == "cdn"} == {("us-1", "CN", D1, 40, "cdn", "")}


def test_each_bad_line_is_refused_with_its_number_and_reason_and_the_rest_goes_in(tmp_path, developers):
    tomorrow = TODAY + dt.timedelta(days=1)
    path = feed(
        tmp_path,
        "external_id,day,country,ip,requests\n"
        f"us-1,{D1},CN,,3\n"
        f"nobody,{D1},CN,,1\n"
        f"us-1,{tomorrow},CN,,1\n"
        f"us-1,{D1},,10.0.0.1,1\n"
        f"us-1,{D1},,not-an-ip,1\n"
        f"us-1,{D1},CN,,-4\n"
        f"us-1,{D1},XX,,1\n"
        f"us-1,yesterday,CN,,1\n"
        f"ru-1,{D2},,{RU_IP},\n",
    )
    out, err = run(path)
    lines = err.strip().splitlines()
    assert [line.split(":")[1].strip().split(" ")[1] for line in lines] == ["3", "4", "5", "6", "7", "8", "9"]
    assert "line 3 (nobody): no developer has this external_id" in err
    assert f"line 4 (us-1): day {tomorrow} is in the future" in err
    assert "line 5 (us-1): 10.0.0.1 is not a public address" in err
    assert "line 6 (us-1): 'not-an-ip' is not an IP address" in err
    assert "line 7 (us-1): requests -4 is negative" in err
    assert "line 8 (us-1): country 'XX' is not an ISO 3166 alpha-2 code" in err
    assert "line 9 (us-1): day 'yesterday' is not a date" in err
    assert {(r[0], r[1], r[3]) for r in rollups()} == {("us-1", "CN", 3), ("ru-1", "RU", 1)}
    assert "7 invalid" in out


def test_all_or_nothing_keeps_the_whole_file_out_for_one_bad_line(tmp_path, developers):
    path = feed(tmp_path, f"external_id,day,country\nus-1,{D1},CN\nnobody,{D1},CN\n")
    with pytest.raises(CommandError, match="Nothing imported: 1 of 2 lines are invalid"):
        run(path, "--all-or-nothing")
    assert not TrafficObservation.objects.exists()


def test_json_lines_gzipped_from_standard_input(developers):
    lines: list[dict[str, object] | str] = [
        {"external_id": "us-1", "day": str(D1), "country": "CN", "requests": 12},
        {"external_id": "ru-1", "timestamp": f"{D2}T08:00:00Z", "ip": RU_IP},
        "not json",
    ]
    body = "\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n"
    out, err = run("-", "--source", "stream", stdin=gzip.compress(body.encode()))
    assert {(r[0], r[1], r[3]) for r in rollups()} == {("us-1", "CN", 12), ("ru-1", "RU", 1)}
    assert "line 3: not JSON" in err


def test_a_file_that_is_no_feed_is_refused_whole(tmp_path, developers):
    with pytest.raises(CommandError, match="must name the columns"):
        run(feed(tmp_path, "a,b\n1,2\n"))
    with pytest.raises(CommandError, match="source"):
        run(feed(tmp_path, f"external_id,day,country\nus-1,{D1},CN\n"), "--source", "bad source!")
    with pytest.raises(CommandError, match="no such file"):
        run(str(tmp_path / "missing.csv"))
    assert not TrafficObservation.objects.exists()


def test_a_maxmind_database_named_by_geoip_database_resolves_and_is_recorded(tmp_path, settings, developers):
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "IR"}})  # not where iptocc puts it
    path = tmp_path / "country.mmdb"
    writer.to_db_file(str(path))
    settings.GEOIP_DATABASE = str(path)
    out, err = run(feed(tmp_path, f"external_id,day,ip\nus-1,{D1},{US_IP}\nus-1,{D1},{CN_IP}\n"))
    (row,) = rollups()
    import maxminddb

    built = dt.datetime.fromtimestamp(maxminddb.open_database(str(path)).metadata().build_epoch, dt.UTC).date()
    assert row[:4] == ("us-1", "IR", D1, 1) and row[5] == f"GeoLite2-Country {built}"
    assert "has no country for 1.2.4.8" in err


def test_erasing_a_developer_erases_their_traffic(tmp_path, developers):
    run(feed(tmp_path, f"external_id,day,country\nus-1,{D1},CN\nru-1,{D1},RU\n"))
    developer_erase(developer=developers["us"])
    assert {r[0] for r in rollups()} == {"ru-1"}
    _, err = run(feed(tmp_path, f"external_id,day,country\nus-1,{D1},CN\n", "again.csv"))
    assert "the developer was erased" in err and {r[0] for r in rollups()} == {"ru-1"}


# --- the bulk API ------------------------------------------------------------------


def api_token(*scopes: str) -> str:
    client = ApiClient(name="gateway-" + "-".join(scopes).replace(":", ""), scopes=list(scopes))
    token = client.token_rotate()
    client.save()
    return token


def post_traffic(client, token: str, body: object):
    return client.post(
        "/api/v1/traffic/bulk",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_the_bulk_api_writes_rollups_and_lists_bad_items_by_index(client, developers):
    token = api_token(Scope.TRAFFIC_WRITE)
    body = {
        "observations": [
            {"external_id": "us-1", "day": str(D1), "country": "CN", "requests": 40, "source": "edge"},
            {"external_id": "us-1", "day": str(D1), "ip": CN_IP, "requests": 2, "source": "edge"},
            {"external_id": "ghost", "day": str(D1), "country": "CN"},
            {"external_id": "ru-1", "day": str(TODAY + dt.timedelta(days=2)), "country": "RU"},
        ]
    }
    response = post_traffic(client, token, body)
    assert response.status_code == 200, response.content
    result = response.json()
    assert result["accepted"] == 2 and result["rollups"] == 1
    assert [(e["index"], e["external_id"]) for e in result["errors"]] == [(2, "ghost"), (3, "ru-1")]
    assert "no developer" in result["errors"][0]["error"] and "future" in result["errors"][1]["error"]
    (row,) = rollups()
    assert row[:5] == ("us-1", "CN", D1, 42, "edge")


def test_the_bulk_api_needs_the_traffic_scope_and_refuses_malformed_bodies(client, developers):
    item = {"external_id": "us-1", "day": str(D1), "country": "CN"}
    assert post_traffic(client, api_token(Scope.SYNC), {"observations": [item]}).status_code == 403
    assert post_traffic(client, "wrong", {"observations": [item]}).status_code == 401
    token = api_token(Scope.TRAFFIC_WRITE)
    assert post_traffic(client, token, {"observations": [item] * 10_001}).status_code == 422
    assert post_traffic(client, token, {"observations": [{**item, "requests": -1}]}).status_code == 422
    assert post_traffic(client, token, {"observations": [{**item, "requests": "7"}]}).status_code == 422
    assert not TrafficObservation.objects.exists()
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/traffic/bulk" in schema["paths"]


# --- the audience rule -------------------------------------------------------------


def observe(external_id: str, country: str, day: dt.date, requests: int, source: str = "gateway") -> None:
    from memo_service.developers.models import Developer

    TrafficObservation.objects.create(
        developer=Developer.objects.get(external_id=external_id),
        country=country,
        day=day,
        requests=requests,
        source=source,
        geo_database="iptocc 3.3.170",
    )


@pytest.fixture
def by_traffic(developers):
    """A memo for traffic from CN, HK, MO, RU or IR in the last 30 days, 10 requests or more;
    a US account over it, a DE account under it, a CN account with no traffic at all."""
    make_developer("de-1", "DE")
    memo = make_memo(
        slug="traffic-blocked",
        audience_basis=Memo.Basis.TRAFFIC,
        traffic_countries=["CN", "HK", "MO", "RU", "IR"],
        traffic_min_requests=10,
    )
    observe("us-1", "CN", D1, 600)
    observe("us-1", "CN", D2, 40)
    observe("us-1", "HK", D3, 600)
    observe("us-1", "US", D3, 99_999)  # not a traffic country
    observe("de-1", "RU", D1, 4)
    observe("de-1", "RU", D2, 5, source="cdn")  # 9 in all: under the threshold
    observe("ru-1", "RU", TODAY - dt.timedelta(days=45), 1_000)  # outside the window
    return memo


def test_an_audience_by_traffic_holds_those_whose_traffic_crossed_the_threshold(by_traffic):
    assert set(memo_audience(by_traffic).values_list("external_id", flat=True)) == {"us-1"}
    observe("de-1", "IR", D3, 1)  # now 10
    assert set(memo_audience(by_traffic).values_list("external_id", flat=True)) == {"us-1", "de-1"}
    by_traffic.audience_basis = Memo.Basis.EITHER  # the account's country (CN, RU) or the traffic
    assert set(memo_audience(by_traffic).values_list("external_id", flat=True)) == {"us-1", "de-1", "cn-1", "ru-1"}
    by_traffic.exclude_countries = ["HK", "RU"]  # from both lists: de-1 keeps only IR's 1 request
    assert set(memo_audience(by_traffic).values_list("external_id", flat=True)) == {"us-1", "cn-1"}


def test_the_admin_is_told_why_a_developer_is_in_or_not(by_traffic, developers):
    us = developers["us"]
    assert audience_explain(by_traffic, us) == (
        f"us-1 is included: traffic from CN on 2 days between {D1} and {D2}, 640 requests (iptocc 3.3.170); "
        f"traffic from HK on {D3}, 600 requests (iptocc 3.3.170); active"
    )
    from memo_service.developers.models import Developer

    explained = audience_explain(by_traffic, Developer.objects.get(external_id="de-1"))
    assert explained.startswith("de-1 is not included: 9 requests from CN, HK, IR, MO, RU between")
    assert explained.endswith("fewer than 10")


def test_the_counts_say_how_many_are_in_by_account_and_by_traffic(by_traffic, admin_client):
    by_traffic.audience_basis = Memo.Basis.EITHER
    by_traffic.save()
    total, rows = audience_counts(by_traffic)
    assert total == 3
    assert {r[0]: r[2:] for r in rows} == {"CN": (1, 1, 0), "RU": (1, 1, 0), "US": (1, 0, 1)}
    # The live count follows the rules as they are typed, before they are saved.
    rules = (
        "rules=1&active_only=on&audience_basis=traffic&traffic_countries=RU&traffic_countries=CN"
        "&traffic_min_requests=5&traffic_days=30"
    )
    response = admin_client.get(f"/admin/memos/memo/{by_traffic.pk}/audience/?{rules}")
    assert response.status_code == 200, response.content
    assert response.json()["total"] == 2  # us-1 by CN, de-1 by its 9 from RU
    assert response.json()["basis"] == "traffic"


def test_the_window_is_fixed_when_the_memo_is_approved(by_traffic):
    approve(by_traffic)
    assert by_traffic.approved_rules["traffic_until"] == str(TODAY)
    assert by_traffic.approved_rules["traffic_countries"] == ["CN", "HK", "IR", "MO", "RU"]
    Memo.objects.filter(pk=by_traffic.pk).update(approved_rules={**by_traffic.approved_rules, "traffic_until": str(D2)})
    by_traffic.refresh_from_db()
    observe("de-1", "RU", D3, 500)  # after the window's last day: it does not count
    assert set(memo_audience(by_traffic).values_list("external_id", flat=True)) == {"us-1"}


def test_each_delivery_and_the_developers_page_say_why_in_their_language(by_traffic, developers, settings, client):
    settings.EMAIL_BACKEND = "memo_service.outbox.OutboxEmailBackend"
    observe("cn-1", "MO", D2, 10)
    observe("cn-1", "MO", D1, 10)
    approve(by_traffic)
    memo_send_start(memo=by_traffic)
    memo_dispatch(memo_id=by_traffic.pk)
    deliveries = {d.developer.external_id: d for d in Delivery.objects.filter(memo=by_traffic)}
    assert set(deliveries) == {"us-1", "cn-1"}  # a US account in by its traffic; de-1 under the threshold
    assert deliveries["us-1"].reason == (
        f"traffic from CN on 2 days between {D1} and {D2}, 640 requests (iptocc 3.3.170); "
        f"traffic from HK on {D3}, 600 requests (iptocc 3.3.170)"
    )
    delivery_send_batch(delivery_ids=[d.pk for d in deliveries.values()])

    exported = {r["developer"]: r["reason"] for r in evidence_records(by_traffic)}
    assert exported == {"us-1": deliveries["us-1"].reason, "cn-1": deliveries["cn-1"].reason}
    assert "traffic from MO on 2 days" in exported["cn-1"]
    page = client.get(ack_url(by_traffic.pk, developers["us"].pk).removeprefix("http://testserver"), follow=True)
    html = page.content.decode()
    assert page.status_code == 200
    assert "You are receiving this because API traffic from your account came from Hong Kong (HK) on" in html
    assert (
        "came from China (CN) on 2 days between "
        f"{D1.day} {D1.strftime('%B')} {D1.year} and {D2.day} {D2.strftime('%B')} {D2.year}." in html
    )
    other = client.get(ack_url(by_traffic.pk, developers["cn"].pk).removeprefix("http://testserver"), follow=True)
    assert "您收到此通知，是因为您账户的 API 流量在" in other.content.decode()
    assert "澳门" in other.content.decode()  # Macao, named in Chinese


def test_the_audience_read_a_page_at_a_time_is_the_whole_audience(by_traffic, monkeypatch):
    from memo_service.memos.audience import audience_pages
    from memo_service.memos.send import dispatch

    for i in range(7):
        make_developer(f"far-{i}", "US")
        observe(f"far-{i}", "IR", D3, 10 + i)
    by_traffic.audience_basis = Memo.Basis.EITHER
    whole = list(memo_audience(by_traffic).order_by("id").values_list("id", flat=True))
    for size in (1, 2, 3, 100):
        paged = [d for page in audience_pages(by_traffic, size) for d in page.values_list("id", flat=True)]
        assert paged == whole
    by_traffic.save()
    monkeypatch.setattr(dispatch, "PAGE_SIZE", 2)
    approve(by_traffic)
    memo_send_start(memo=by_traffic)
    memo_dispatch(memo_id=by_traffic.pk)
    assert sorted(Delivery.objects.filter(memo=by_traffic).values_list("developer_id", flat=True)) == whole


@pytest.fixture
def sent_by_traffic(by_traffic, developers, settings):
    settings.EMAIL_BACKEND = "memo_service.outbox.OutboxEmailBackend"
    approve(by_traffic)
    memo_send_start(memo=by_traffic)
    memo_dispatch(memo_id=by_traffic.pk)
    delivery_send_batch(delivery_ids=list(Delivery.objects.filter(memo=by_traffic).values_list("id", flat=True)))
    return by_traffic


def test_a_developer_disputes_the_traffic_and_an_admin_exempts_them(sent_by_traffic, developers, client, admin_client):
    from memo_service.memos.models import Answer
    from memo_service.memos.reminders import still_to_answer

    memo, us = sent_by_traffic, developers["us"]
    page = client.get(ack_url(memo.pk, us.pk).removeprefix("http://testserver"), follow=True)
    assert "This traffic is not mine" in page.content.decode()
    posted = client.post(
        f"/ack/memo/{memo.pk}/",
        {"response": "disputes_traffic", "comment": "That is our CDN's egress in Hong Kong", "interacted": "1"},
        follow=True,
    )
    assert "you told us this traffic is not yours" in posted.content.decode()
    dispute = Answer.objects.get(memo=memo, developer=us, response="disputes_traffic")
    assert dispute.comment == "That is our CDN's egress in Hong Kong"

    queue = admin_client.get("/admin/memos/dispute/?state=open")
    assert "traffic from CN on 2 days" in queue.content.decode()  # the evidence beside the claim
    decided = admin_client.post(
        f"/admin/memos/case/{dispute.cases.get().pk}/decide/",
        {"outcome": "exempted", "rationale": "A proxy's egress, not theirs", "confirmed": "1"},
        follow=True,
    )
    assert decided.status_code == 200 and dispute.__class__.objects.get(pk=dispute.pk).resolution.exempt
    shown = client.get(f"/ack/memo/{memo.pk}/").content.decode()
    assert "this memo no longer applies to you" in shown
    acked = client.post(f"/ack/memo/{memo.pk}/", {"response": "acknowledged", "interacted": "1"})
    assert acked.status_code == 400
    assert not Answer.objects.filter(memo=memo, developer=us, response="acknowledged").exists()
    from memo_service.developers.models import Developer

    assert not Developer.objects.filter(pk=us.pk).filter(still_to_answer(memo, us.pk)).exists()


def test_a_traffic_dispute_is_refused_where_the_audience_is_by_account(memo, developers, client, settings):
    from memo_service.memos.models import Answer

    settings.EMAIL_BACKEND = "memo_service.outbox.OutboxEmailBackend"
    approve(memo)
    memo_send_start(memo=memo)
    memo_dispatch(memo_id=memo.pk)
    delivery_send_batch(delivery_ids=list(Delivery.objects.filter(memo=memo).values_list("id", flat=True)))
    page = client.get(ack_url(memo.pk, developers["cn"].pk).removeprefix("http://testserver"), follow=True)
    assert "这些流量不是我的" not in page.content.decode()  # no traffic put them in
    refused = client.post(f"/ack/memo/{memo.pk}/", {"response": "disputes_traffic", "interacted": "1"})
    assert refused.status_code == 400 and not Answer.objects.exists()


def test_the_preview_picks_a_developer_in_by_traffic_only_and_says_why(by_traffic, admin_client):
    by_traffic.audience_basis = Memo.Basis.EITHER
    by_traffic.save()
    url = f"/admin/memos/memo/{by_traffic.pk}/preview/"
    html = admin_client.get(url, {"in_by": "traffic_only"}).content.decode()
    assert 'value="us-1" selected' in html and "cn-1" not in html  # a US account, in by its traffic
    assert "us-1 is included: traffic from CN on 2 days" in html
    html = admin_client.get(url, {"in_by": "account"}).content.decode()
    assert "us-1" not in html and "cn-1" in html


def test_templates_print_the_traffic_that_put_the_developer_in_and_cannot_branch_on_it(
    by_traffic, developers, settings, client, admin_client
):
    settings.EMAIL_BACKEND = "memo_service.outbox.OutboxEmailBackend"
    observe("cn-1", "MO", D2, 10)
    Memo.objects.filter(pk=by_traffic.pk).update(
        text_body="Your calls came from {{ developer.traffic_countries }}: {{ developer.traffic_summary }}."
    )
    by_traffic.translations.update(
        text_body="您的调用来自 {{ developer.traffic_countries }}：{{ developer.traffic_summary }}。"
    )
    by_traffic.refresh_from_db()
    approve(by_traffic)
    memo_send_start(memo=by_traffic)
    memo_dispatch(memo_id=by_traffic.pk)
    delivery_send_batch(delivery_ids=list(Delivery.objects.filter(memo=by_traffic).values_list("id", flat=True)))
    texts = []
    for path in settings.OUTBOX_DIR.glob("*.eml"):
        for part in email.message_from_bytes(path.read_bytes()).walk():
            if part.get_content_type() == "text/plain" and isinstance(text := part.get_payload(decode=True), bytes):
                texts.append(text.decode())
    assert any(
        f"Your calls came from CN, HK: China (CN): 2 days, {D1} to {D2}; Hong Kong (HK): {D3}." in t for t in texts
    )
    assert any(f"您的调用来自 MO：澳门（MO）：{D2}。" in t for t in texts)
    # The page shows the text that was sent, from the values kept with the delivery.
    us = Delivery.objects.get(memo=by_traffic, developer=developers["us"])
    assert us.rendered_with is not None and us.rendered_with[-2:] == [
        "CN, HK",
        f"China (CN): 2 days, {D1} to {D2}; Hong Kong (HK): {D3}",
    ]
    cn = Delivery.objects.get(memo=by_traffic, developer=developers["cn"])
    assert cn.rendered_with is not None and cn.rendered_with[-1] == f"澳门（MO）：{D2}"
    page = client.get(ack_url(by_traffic.pk, developers["us"].pk).removeprefix("http://testserver"), follow=True)
    assert page.status_code == 200  # rendered again from the kept values: the text hash holds
    # A condition on them cannot be shown to the approver as versions: refused at save.
    from tests.test_admin import memo_form

    branching = "{% if 'CN' in developer.traffic_countries %}x{% endif %}"
    refused = admin_client.post(
        "/admin/memos/memo/add/",
        memo_form(text_body=branching, audience_basis="traffic", traffic_countries=["CN"], slug="branches"),
    )
    assert refused.status_code == 200 and not Memo.objects.filter(slug="branches").exists()
    assert "line 1" in str(refused.context["adminform"].form.errors["text_body"])
