"""The console channel: a developer's notices, and answers the console relays for them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from memo_service.api.models import ApiClient, Scope
from memo_service.memos.answer.notices import developer_notices, notices_sql
from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.evidence.sequencer import evidence_seal
from memo_service.memos.evidence.verify import evidence_verify
from memo_service.memos.models import (
    Answer,
    Delivery,
    Memo,
    WebhookEndpoint,
    WebhookMessage,
)
from memo_service.memos.withdrawal import memo_withdraw
from tests.conftest import make_memo, sent_memo

pytestmark = pytest.mark.django_db
PHONE = "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36"


def make_client(name: str, *scopes: Scope) -> str:
    client = ApiClient(name=name, scopes=[s.value for s in scopes])
    token = client.token_rotate()
    client.save()
    return token


@pytest.fixture
def console() -> str:
    """The platform's console: reads notices and relays answers, no account sync."""
    return make_client("console", Scope.NOTICES_READ, Scope.ANSWERS_RELAY)


def sent(memo: Memo, *developers: Any, hours_ago: float = 1, status: str = "delivered") -> Memo:
    """Sent `hours_ago` to its audience (`developers`) by the send task, each email then
    moved to `status` by the provider's tracking event."""
    return sent_memo(memo, {d: status for d in developers}, at=timezone.now() - dt.timedelta(hours=hours_ago))


def text_hash(memo: Memo, external_id: str) -> str:
    """The hash of the email the developer was sent: what the console gets and sends back
    (any well-formed hash for a memo they were not sent)."""
    sent = Delivery.objects.filter(memo=memo, developer__external_id=external_id).exclude(text_hash="").first()
    return sent.text_hash if sent else "f" * 64


@pytest.fixture
def two_memos(memo: Memo, developers: dict[str, Any]) -> tuple[Memo, Memo]:
    """The regions memo went to CN and RU two days ago; a newer one to CN an hour ago."""
    older = sent(memo, developers["cn"], developers["ru"], hours_ago=48)
    newer = sent(key_rotation(), developers["cn"], hours_ago=1)
    return older, newer


def key_rotation() -> Memo:
    """A memo to CN only."""
    return make_memo(
        ["CN"],
        title="Key rotation",
        slug="key-rotation",
        subject="Rotate your keys, {{ developer.name }}",
        text_body="Hello {{ developer.name }}, rotate keys before {{ memo.effective_date }}.",
    )


def get(client: Any, path: str, token: str | None) -> Any:
    return client.get(f"/api/v1{path}", HTTP_AUTHORIZATION=f"Bearer {token}")


def post(client: Any, path: str, token: str | None, body: dict[str, Any]) -> Any:
    return client.post(
        f"/api/v1{path}", data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def answer(client: Any, token: str, external_id: str, memo: Memo, **body: Any) -> Any:
    body = {
        "response": "acknowledged",
        "content_hash": text_hash(memo, external_id),
        "ip_address": "203.0.113.9",
        "user_agent": PHONE,
        **body,
    }
    return post(client, f"/developers/{external_id}/memos/{memo.slug}/answers", token, body)


def test_the_console_gets_the_memos_as_sent_in_the_developers_language_newest_first(client, console, two_memos):
    older, _ = two_memos
    response = get(client, "/developers/cn-1/notices", console)
    assert response.status_code == 200
    items = response.json()["items"]
    assert [n["memo"] for n in items] == ["key-rotation", "regions-blocked"]
    regions = items[1]
    assert regions["language"] == "zh-hans"
    assert regions["subject"] == "来自中国的访问将被阻止"
    assert regions["text"] == "Wang Wei，您好：\n来自中国的流量将被阻止。"
    assert (regions["title"], regions["effective_date"], regions["state"], regions["dispute"]) == (
        "Regions blocked",
        "2027-07-09",
        "unanswered",
        None,
    )
    assert regions["content_hash"] == text_hash(older, "cn-1") != older.content_hash
    # The link opens the same memo on the acknowledgement page.
    page = client.get(regions["ack_url"].removeprefix("http://testserver"), follow=True)
    assert page.status_code == 200 and "来自中国的访问将被阻止" in page.content.decode()
    assert [n["memo"] for n in get(client, "/developers/ru-1/notices", console).json()["items"]] == ["regions-blocked"]
    assert get(client, "/developers/us-1/notices", console).json()["items"] == []
    assert get(client, "/developers/nobody/notices", console).status_code == 404


def test_an_answer_in_the_console_is_evidence_like_one_on_the_page(client, console, two_memos, developers):
    older, _ = two_memos
    WebhookEndpoint.objects.create(url="https://platform.example/hooks", events=["memo.acknowledged"])
    response = answer(client, console, "ru-1", older)
    assert response.status_code == 201
    assert response.json() | {"id": 0, "created_at": None} == {
        "id": 0,
        "memo": "regions-blocked",
        "external_id": "ru-1",
        "response": "acknowledged",
        "recorded": True,
        "channel": "console",
        "created_at": None,
        "content_hash": text_hash(older, "ru-1"),
    }
    ack = Answer.objects.get()
    assert ack.api_client is not None
    assert (ack.channel, ack.api_client.name, ack.ip_address, ack.user_agent) == (
        "console",
        "console",
        "203.0.113.9",
        PHONE,
    )
    evidence_seal(memo_id=older.pk)  # what the memo's sequencer does a second later
    assert evidence_verify(older).ok
    assert older.evidence.get(kind="answer").payload["channel"] == "console"
    assert WebhookMessage.objects.get().payload["data"] | {"answered_at": None} == {
        "memo": "regions-blocked",
        "memo_id": older.pk,
        "developer": "ru-1",
        "response": "acknowledged",
        "answered_at": None,
        "content_hash": older.content_hash,
        "suspected_automation": False,
        "country_claimed": "",
        "channel": "console",
    }
    # Answered: the banner goes; the notice stays under state=all.
    assert get(client, "/developers/ru-1/notices", console).json()["items"] == []
    every = get(client, "/developers/ru-1/notices?state=all", console).json()["items"]
    assert [(n["memo"], n["state"]) for n in every] == [("regions-blocked", "acknowledged")]
    # The same press again, or another answer after it, records nothing.
    again = answer(client, console, "ru-1", older, response="needs_help", comment="?")
    assert (again.status_code, again.json()["recorded"], again.json()["response"]) == (200, False, "acknowledged")
    assert Answer.objects.count() == 1


def test_a_dispute_then_an_acknowledgement_and_the_disputes_state(client, console, two_memos):
    older, _ = two_memos
    assert (
        answer(
            client, console, "cn-1", older, response="disputes_region", country="KZ", comment="We moved to Almaty"
        ).status_code
        == 201
    )
    notices = {n["memo"]: n for n in get(client, "/developers/cn-1/notices", console).json()["items"]}
    # A dispute is not an acknowledgement: the banner stays, saying what was claimed.
    assert notices["regions-blocked"]["state"] == "disputes_region"
    assert notices["regions-blocked"]["dispute"] == {"country_claimed": "KZ", "outcome": None, "exempt": False}
    assert answer(client, console, "cn-1", older).status_code == 201
    assert sorted(Answer.objects.values_list("response", "channel")) == [
        ("acknowledged", "console"),
        ("disputes_region", "console"),
    ]


def test_an_answer_to_another_text_gets_409_with_the_right_hash(client, console, two_memos):
    older, _ = two_memos
    response = answer(client, console, "cn-1", older, content_hash="0" * 64)
    assert response.status_code == 409 and response.json()["content_hash"] == text_hash(older, "cn-1")
    assert not Answer.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"response": "needs_help", "comment": "  "},
        {"response": "disputes_region", "country": "XX"},
        {"response": "maybe"},
        {"ip_address": "not-an-address"},
        {"content_hash": "short"},
        {"user_agent": "x\x00y"},
    ],
)
def test_bad_answers_get_422_and_record_nothing(client, console, two_memos, body):
    response = answer(client, console, "cn-1", two_memos[0], **body)
    assert response.status_code == 422, response.content
    assert not Answer.objects.exists()


def test_nothing_is_taken_after_the_deadlines_grace(client, console, memo, developers, settings):
    # The regions memo went out long ago, its deadline the day after: its grace is over.
    long_ago = timezone.now() - dt.timedelta(days=settings.ACK_GRACE_DAYS + 2)
    Memo.objects.filter(pk=memo.pk).update(ack_deadline=long_ago + dt.timedelta(days=1))  # the draft's deadline
    older = sent(
        memo, developers["cn"], developers["ru"], hours_ago=(timezone.now() - long_ago) / dt.timedelta(hours=1)
    )
    sent(key_rotation(), developers["cn"], hours_ago=1)
    assert answer(client, console, "cn-1", older).status_code == 410
    assert not Answer.objects.exists()
    # Closed memos leave the banner; the record keeps them.
    assert [n["memo"] for n in get(client, "/developers/cn-1/notices", console).json()["items"]] == ["key-rotation"]
    assert len(get(client, "/developers/cn-1/notices?state=all", console).json()["items"]) == 2


def test_a_memo_not_sent_to_the_developer_is_404(client, console, two_memos):
    assert answer(client, console, "us-1", two_memos[0]).status_code == 404
    assert answer(client, console, "ru-1", two_memos[1]).status_code == 404
    assert answer(client, console, "ghost", two_memos[0]).status_code == 404


def test_each_scope_is_its_own_permission(client, two_memos, developers):
    sync_only = make_client("sync", Scope.SYNC)
    reader = make_client("reader", Scope.NOTICES_READ)
    relay = make_client("relay", Scope.ANSWERS_RELAY)
    assert get(client, "/developers/cn-1/notices", sync_only).status_code == 403
    assert answer(client, sync_only, "cn-1", two_memos[0]).status_code == 403
    assert answer(client, reader, "cn-1", two_memos[0]).status_code == 403
    assert get(client, "/developers/cn-1/notices", relay).status_code == 403
    assert post(client, "/developers/cn-1/deactivate", reader, {}).status_code == 403
    assert not Answer.objects.exists() and developers["cn"].is_active
    assert get(client, "/developers/cn-1/notices", reader).status_code == 200
    assert answer(client, relay, "cn-1", two_memos[0]).status_code == 201
    assert get(client, "/developers/cn-1/notices", "wrong").status_code == 401


def test_the_admin_grants_scopes(admin_client, client):
    admin_client.post(
        "/admin/api/apiclient/add/", {"name": "console", "is_active": "on", "scopes": ["notices:read", "answers:relay"]}
    )
    assert ApiClient.objects.get(name="console").scopes == ["notices:read", "answers:relay"]


def test_reading_notices_is_one_indexed_query(two_memos, developers):
    developer_notices(external_id="cn-1")  # compiles each memo's templates once per process
    with CaptureQueriesContext(connection) as queries:
        assert len(developer_notices(external_id="cn-1", state="all") or ()) == 2
        assert len(developer_notices(external_id="cn-1") or ()) == 2
    assert len(queries) == 2
    sql, params = notices_sql(external_id="cn-1")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # tiny tables: judge the plan it can use
            cursor.execute("EXPLAIN " + sql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = "\n".join(str(row) for row in cursor.fetchall())
    assert "external_id" in plan and "Seq Scan" not in plan and "SCAN " not in plan, plan


def test_a_bounced_email_still_shows_but_a_queued_one_does_not(client, console, memo, developers):
    sent_memo(memo, {developers["cn"]: "bounced", developers["ru"]: "queued"})
    assert len(get(client, "/developers/cn-1/notices", console).json()["items"]) == 1
    assert get(client, "/developers/ru-1/notices", console).json()["items"] == []


def test_reports_count_and_show_answers_by_channel(client, admin_client, console, two_memos, developers, capsys):
    older, _ = two_memos
    # RU answers on the page the emailed link opens; CN in the console.
    client.get(ack_url(older.pk, developers["ru"].pk).removeprefix("http://testserver"))
    client.post(f"/ack/memo/{older.pk}/", {"interacted": "1", "response": "acknowledged"}, HTTP_USER_AGENT=PHONE)
    answer(client, console, "cn-1", older, response="needs_help", comment="Which regions?")
    answer(client, console, "cn-1", older)
    expected = {
        "email_link": {
            "acknowledged": 1,
            "disputes_region": 0,
            "disputes_traffic": 0,
            "needs_help": 0,
            "objects": 0,
            "total": 1,
        },
        "console": {
            "acknowledged": 1,
            "disputes_region": 0,
            "disputes_traffic": 0,
            "needs_help": 1,
            "objects": 0,
            "total": 2,
        },
    }
    call_command("memo_status", older.slug, "--json")
    assert json.loads(capsys.readouterr().out)["answers_by_channel"] == expected
    call_command("memo_status", older.slug)
    assert capsys.readouterr().out.splitlines()[-1] == (
        "answers by channel: email link 1 (acknowledged 1, disputes region 0, disputes traffic 0, needs help 0, "
        "objects 0); console 2 (acknowledged 1, disputes region 0, disputes traffic 0, needs help 1, objects 0)"
    )
    page = admin_client.get(reverse("admin:memos_memo_dashboard", args=[older.pk])).content.decode()
    assert "<tr><td>console (through the sync API)</td><td>1</td><td>0</td><td>1</td><td>2</td></tr>" in page
    assert "<tr><td>email link</td><td>1</td><td>0</td><td>0</td><td>1</td></tr>" in page

    out = io.StringIO()
    call_command("export_evidence", older.slug, "--format", "csv", stdout=out)
    rows = {r["developer"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert (rows["cn-1"]["answer"], rows["cn-1"]["channel"], rows["cn-1"]["api_client"]) == (
        "acknowledged",
        "console",
        "console",
    )
    assert (rows["ru-1"]["channel"], rows["ru-1"]["api_client"]) == ("email_link", "")
    out = io.StringIO()
    call_command("export_evidence", older.slug, "--format", "json", stdout=out)
    export = json.loads(out.getvalue())
    assert export["answers_by_channel"] == expected
    cn = next(r for r in export["recipients"] if r["developer"] == "cn-1")
    assert [(a["response"], a["channel"]) for a in cn["answers"]] == [
        ("needs_help", "console"),
        ("acknowledged", "console"),
    ]


def test_a_disabled_client_is_refused_within_seconds_and_at_once_after_an_admin_change(
    client, admin_client, console, two_memos, monkeypatch
):
    from memo_service.api import auth

    assert get(client, "/developers/cn-1/notices", console).status_code == 200
    ApiClient.objects.update(is_active=False)  # by another process, say: this one still knows the client
    assert get(client, "/developers/cn-1/notices", console).status_code == 200
    later = auth.time.monotonic() + auth.CLIENT_CACHE_SECONDS + 1
    monkeypatch.setattr(auth.time, "monotonic", lambda: later)
    assert get(client, "/developers/cn-1/notices", console).status_code == 401
    # Changed in the admin, the client's scopes apply at once in the admin's process.
    ApiClient.objects.update(is_active=True)
    assert get(client, "/developers/cn-1/notices", console).status_code == 200
    api_client = ApiClient.objects.get(name="console")
    admin_client.post(
        f"/admin/api/apiclient/{api_client.pk}/change/",
        {"name": "console", "is_active": "on", "scopes": ["answers:relay"]},
    )
    assert get(client, "/developers/cn-1/notices", console).status_code == 403


def test_a_console_page_load_costs_one_query(client, console, two_memos, django_assert_num_queries):
    get(client, "/developers/cn-1/notices", console)  # the client and the memos' templates, once
    with django_assert_num_queries(1):
        assert len(get(client, "/developers/cn-1/notices", console).json()["items"]) == 2


def test_an_erased_developer_has_no_notices_and_cannot_answer(client, console, two_memos, developers):
    from memo_service.developers.erasure import developer_erase

    developer_erase(developer=developers["ru"])
    assert get(client, "/developers/ru-1/notices", console).status_code == 404
    assert answer(client, console, "ru-1", two_memos[0]).status_code == 404


def test_both_endpoints_are_in_the_openapi_schema(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    notices = paths["/api/v1/developers/{external_id}/notices"]["get"]
    answers = paths["/api/v1/developers/{external_id}/memos/{memo}/answers"]["post"]
    assert {"200", "403", "404"} <= set(notices["responses"])
    assert {"200", "201", "403", "409", "410", "422"} <= set(answers["responses"])


def test_the_answers_list_in_the_admin_filters_by_channel(admin_client, client, console, two_memos):
    answer(client, console, "cn-1", two_memos[0])
    page = admin_client.get("/admin/memos/answer/?channel__exact=console").content.decode()
    assert "cn-1" in page and "1 answer" in page
    assert "0 answers" in admin_client.get("/admin/memos/answer/?channel__exact=email_link").content.decode()


def test_the_answers_list_at_its_old_address_redirects_with_its_filters(admin_client):
    response = admin_client.get("/admin/memos/acknowledgement/?channel__exact=console")
    assert response.status_code == 301 and response["Location"] == "/admin/memos/answer/?channel__exact=console"


def test_a_read_only_client_is_given_no_link_that_answers(client, two_memos):
    reader = make_client("dashboard", Scope.NOTICES_READ)
    items = get(client, "/developers/cn-1/notices", reader).json()["items"]
    assert items and all(item["ack_url"] is None for item in items)


def test_a_console_link_answers_as_relayed_by_its_client_and_only_while_it_may(client, console, two_memos):
    """Once, a notices:read client took ack_url and answered as the developer's own
    email link. A link now is bound to the client that asked for it."""
    older, _ = two_memos
    item = next(i for i in get(client, "/developers/cn-1/notices", console).json()["items"] if i["memo"] == older.slug)
    link = item["ack_url"].removeprefix("http://testserver")
    assert client.get(link).status_code == 303
    page = f"/ack/memo/{older.pk}/"
    assert client.post(page, {"response": "acknowledged", "interacted": "1"}, HTTP_USER_AGENT=PHONE).status_code == 303
    answer_ = Answer.objects.get(memo=older)
    assert answer_.api_client is not None
    assert answer_.channel == "console" and answer_.api_client.name == "console"
    # Its relay taken away, the client's links open nothing.
    ApiClient.objects.filter(name="console").update(scopes=[Scope.NOTICES_READ.value])
    other = Client()
    assert other.get(link).status_code == 400


def test_an_email_that_was_never_sent_opens_no_page_and_takes_no_answer(client, memo, developers):
    sent_memo(memo, {developers["ru"]: "failed"})
    link = ack_url(memo.pk, developers["ru"].pk).removeprefix("http://testserver")
    assert client.get(link).status_code == 400
    response = client.post(link, {"response": "acknowledged", "interacted": "1"}, HTTP_USER_AGENT=PHONE)
    assert response.status_code == 400 and not Answer.objects.exists()


def test_an_objection_is_relayed_with_its_reason_and_the_notice_says_so(client, console, two_memos):
    older, _ = two_memos
    response = answer(client, console, "cn-1", older, response="objects", comment="  ")
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body", "comment"], "msg": "Tell us why you object.", "type": "value_error"}
    ]
    assert not Answer.objects.exists()

    assert answer(client, console, "cn-1", older, response="objects", comment="我们不在中国").status_code == 201
    notices = {n["memo"]: n for n in get(client, "/developers/cn-1/notices", console).json()["items"]}
    assert notices["regions-blocked"]["state"] == "objects"  # still to acknowledge, and said so
    funnel = get(client, f"/memos/{older.slug}/funnel", make_client("sync", Scope.SYNC)).json()
    assert funnel["objects"] == funnel["by_country"]["CN"]["objects"] == 1
    assert funnel["answers_by_channel"]["console"]["objects"] == 1


def test_a_withdrawn_memo_is_no_unanswered_notice_and_offers_no_link(client, console, two_memos):
    older, _ = two_memos
    memo_withdraw(memo=older, by=None, reason="Sent to the wrong audience.")
    assert [n["memo"] for n in get(client, "/developers/cn-1/notices", console).json()["items"]] == ["key-rotation"]
    listed = {n["memo"]: n for n in get(client, "/developers/cn-1/notices?state=all", console).json()["items"]}
    assert listed["regions-blocked"]["ack_url"] is None and listed["key-rotation"]["ack_url"]
    response = answer(client, console, "cn-1", older)
    assert response.status_code == 422 and "withdrawn" in response.json()["detail"][0]["msg"]
    assert not Answer.objects.exists()
