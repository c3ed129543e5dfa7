"""The smaller points a compliance team saw (issue 29, point 6), each as a person meets it:
the memo page's audience box and its question, the schedule form, the pickers, the send's
progress at the top, the error pages in the browser's language, counts with separators, a
Viewer's developer list and outbox, and `make run`'s addresses printed once all is up."""

from __future__ import annotations

import datetime as dt
import io
import re
import threading
import zoneinfo
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from memo_service.developers.models import Developer, Region
from memo_service.memos.models import Memo
from memo_service.run_addresses import addresses_when_up
from tests.conftest import approve, sent_memo

pytestmark = pytest.mark.django_db


def person(django_user_model: Any, name: str, group: str) -> Client:
    user = django_user_model.objects.create_user(name, f"{name}@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return client


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# The audience box: the question and the count both read the rules in the form, saved or not.


def test_why_is_a_developer_included_answers_from_the_unsaved_rules(admin_client, memo, developers):
    explain = reverse("admin:memos_memo_explain", args=[memo.pk])
    # Saved: the memo goes to the "Unsupported regions" (CN, RU); the US developer is out.
    saved = admin_client.get(explain, {"developer": "us-1"}).json()["explanation"]
    assert saved.startswith("us-1 is not included")
    # The composer adds US in the form without saving: the answer follows the form.
    region = Region.objects.get(name="Unsupported regions")
    unsaved = admin_client.get(
        explain,
        {"developer": "us-1", "rules": "1", "include_countries": "US", "include_regions": region.pk},
    ).json()["explanation"]
    assert unsaved == "us-1 is included: US is an included country"  # "active only" is unticked in the form
    # Taking the region out of the form leaves the CN developer out, though it is saved.
    assert (
        admin_client.get(explain, {"developer": "cn-1", "rules": "1", "include_countries": "US"})
        .json()["explanation"]
        .startswith("cn-1 is not included: CN is in no included country or region")
    )
    # And the saved memo is as it was.
    memo.refresh_from_db()
    assert [c.code for c in memo.include_countries] == []


def test_the_explain_answer_with_rules_that_do_not_read_says_so(admin_client, memo, developers):
    explain = reverse("admin:memos_memo_explain", args=[memo.pk])
    answer = admin_client.get(explain, {"developer": "cn-1", "rules": "1", "attribute_filters": "{oops"}).json()
    assert answer["explanation"] == "The audience rules are not valid yet: correct them first."


def test_the_explain_box_is_a_question_not_a_field_of_the_memo_form(admin_client, memo):
    page = admin_client.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    box = page.split('class="audience-explain"')[1].split("</div>")[0]
    # No name: the box is not posted with the memo; its button asks, it does not submit.
    assert 'id="explain-id"' in box and "name=" not in box.split('id="explain-id"')[1].split(">")[0]
    assert '<button type="button" id="explain-ask"' in box
    assert "under the rules above, saved or not" in box


def test_active_since_warns_how_many_have_no_activity_date(admin_client, memo, developers):
    Developer.objects.filter(pk=developers["cn"].pk).update(last_active_at=timezone.now())
    # RU has no activity date at all; US is outside the countries anyway.
    Developer.objects.filter(pk__in=[developers["ru"].pk, developers["us"].pk]).update(last_active_at=None)
    memo.active_since = timezone.now().date() - dt.timedelta(days=30)
    memo.save()
    page = admin_client.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    warning = page.split('id="no-activity-date">')[1].split("</p>")[0]
    assert warning.startswith("1 developer left out for having no activity date")
    assert "<strong>1 developers</strong>" in page  # the rule stays as documented: RU is out
    # The live count says the same for the rules being edited.
    audience = reverse("admin:memos_memo_audience", args=[memo.pk])
    region = Region.objects.get(name="Unsupported regions")
    rules = {"rules": "1", "include_regions": region.pk, "active_only": "on"}
    edited = admin_client.get(audience, {**rules, "active_since": memo.active_since.isoformat()}).json()
    assert (edited["total"], edited["no_activity_date"]) == (1, 1)
    assert admin_client.get(audience, rules).json()["no_activity_date"] == 0  # no date rule, no warning
    # The field's help says so too.
    assert "those with no activity date are left out too" in page


# The pickers.


def test_the_include_and_exclude_pickers_are_named_apart(admin_client, memo):
    page = admin_client.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    include = page.split('class="form-row field-include_countries')[1].split('class="form-row')[0]
    exclude = page.split('class="form-row field-exclude_countries')[1].split('class="form-row')[0]
    assert "Send to these countries" in include and "Leave out these countries" in exclude
    assert 'data-field-name="countries to send to"' in include
    assert 'data-field-name="countries to leave out"' in exclude


# The send's progress sits at the top of the memo's page.


def test_the_progress_is_at_the_top_of_a_sent_memos_page(admin_client, memo, developers):
    page = admin_client.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert 'id="send-progress"' not in page  # not sent yet
    sent_memo(memo)
    page = admin_client.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert page.count('id="send-progress"') == 1
    assert page.index('id="send-progress"') < page.index('id="memo_form"')  # above the form, under the buttons
    assert page.index('id="memo-actions"') < page.index('id="send-progress"')
    assert 'href="#send-progress">At the top of the page' in page  # where Results points


# The schedule form.


@pytest.fixture
def approved(memo: Memo) -> Memo:
    return approve(memo)


def schedule(client: Client, memo: Memo, **data: str) -> Any:
    return client.post(reverse("admin:memos_memo_schedule", args=[memo.pk]), data)


def test_the_schedule_form_is_a_picker_in_the_stated_time_zone(admin_client, approved, settings):
    page = admin_client.get(reverse("admin:memos_memo_schedule", args=[approved.pk])).content.decode()
    assert 'type="datetime-local" name="send_at"' in page
    assert "Send at (UTC)" in page and "A time in UTC, the service&#x27;s time zone" in page
    assert re.search(r'min="\d{4}-\d\d-\d\dT\d\d:\d\d"', page)


def test_the_schedule_time_is_read_in_the_service_time_zone(admin_client, approved, settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    at = (timezone.now() + dt.timedelta(days=2)).astimezone(zoneinfo.ZoneInfo("Asia/Shanghai"))
    response = schedule(admin_client, approved, send_at=f"{at:%Y-%m-%dT%H:%M}")
    assert response.status_code == 302
    approved.refresh_from_db()
    assert approved.status == "scheduled"
    assert approved.scheduled_at == at.replace(second=0, microsecond=0)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("01/02/2027 10:00", "Enter the date and time year first, as the picker does: 2027-07-09 14:00."),
        ("2027-13-01T10:00", "Enter the date and time year first"),
        ("", "This field is required."),
    ],
)
def test_an_ambiguous_or_unreadable_time_is_refused_saying_how_to_write_it(admin_client, approved, value, error):
    response = schedule(admin_client, approved, send_at=value)
    assert response.status_code == 200
    assert error in text_of(response.content.decode())
    approved.refresh_from_db()
    assert approved.status == "approved"


def test_a_past_time_is_refused_saying_what_time_it_is(admin_client, approved):
    past = timezone.localtime(timezone.now() - dt.timedelta(hours=1))
    response = schedule(admin_client, approved, send_at=f"{past:%Y-%m-%dT%H:%M}")
    assert f"{past:%Y-%m-%d %H:%M} UTC has passed (it is " in response.content.decode()
    approved.refresh_from_db()
    assert approved.status == "approved"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("2027-10-31T02:30", "happens twice in Europe/Berlin: the clocks go back over it"),
        ("2027-03-28T02:30", "does not exist in Europe/Berlin: the clocks skip it"),
    ],
)
def test_a_time_the_clocks_pass_twice_or_skip_is_refused(admin_client, approved, settings, value, says):
    settings.TIME_ZONE = "Europe/Berlin"
    response = schedule(admin_client, approved, send_at=value)
    assert says in response.content.decode()
    approved.refresh_from_db()
    assert approved.status == "approved"


# The error pages follow the browser's language; the admin stays English.

ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-CN,zh;q=0.9,en;q=0.5"}


@pytest.mark.parametrize(
    ("path", "status", "title"),
    [
        ("/ack/not-a-token/", 400, "此链接无效"),
        ("/ack/memo/1/", 400, "请从邮件中重新打开链接"),
        ("/no-such-page/", 404, "页面不存在"),
    ],
)
def test_the_developers_error_pages_follow_the_browsers_language(client, path, status, title):
    response = client.get(path, **ZH)
    assert response.status_code == status
    html = response.content.decode()
    assert f"<h1>{title}</h1>" in html and '<html lang="zh-hans">' in html
    english = client.get(path, HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()
    assert '<html lang="en">' in english and title not in english


@pytest.mark.parametrize(
    "template",
    [
        "ack/invalid.html",
        "ack/expired.html",
        "ack/reopen.html",
        "ack/too_many.html",
        "ack/erased.html",
        "ack/preview_link.html",
        "ack/unavailable.html",
        "400.html",
        "403.html",
        "404.html",
        "500.html",
    ],
)
def test_every_error_page_reads_all_in_chinese(template):
    from django.template.loader import render_to_string
    from django.utils import translation

    with translation.override("zh-hans"):
        html = render_to_string(template)
    body = text_of(html.split("<body>")[1].split("<script")[0]) + text_of(html.split("<title>")[1].split("</title>")[0])
    # Every word translated ("Cookie" is the word Chinese uses too).
    assert not re.search(r"[A-Za-z]{3,}", body.replace("Cookie", "")), body


def test_the_server_error_page_follows_the_browsers_language(settings):
    from django.urls import path

    def boom(request: Any) -> Any:
        raise RuntimeError("boom")

    urls = type("urls", (), {"urlpatterns": [path("boom/", boom)], "handler500": "django.views.defaults.server_error"})
    settings.ROOT_URLCONF = urls
    client = Client(raise_request_exception=False)
    response = client.get("/boom/", headers={"accept-language": ZH["HTTP_ACCEPT_LANGUAGE"]})
    assert response.status_code == 500 and "<h1>出错了</h1>" in response.content.decode()


def test_the_admin_stays_english_for_a_chinese_browser(admin_client, memo):
    page = admin_client.get(reverse("admin:memos_memo_changelist"), **ZH).content.decode()
    assert "Select memo to change" in page and '<html lang="en"' in page
    assert admin_client.get("/admin/no-such-page/", **ZH).status_code == 404


# Counts read with separators; ids do not.


def test_counts_in_the_admin_and_the_dashboard_have_separators(admin_client, memo, developers):
    Developer.objects.bulk_create(
        [
            Developer(external_id=f"cn-{n}", email=f"cn-{n}@example.com", name="", country="CN", language="zh-hans")
            for n in range(2, 1002)
        ]
    )
    page = admin_client.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert "<strong>1,002 developers</strong>" in page
    assert "<td>CN China</td><td>1,001</td><td>1,001</td><td>0</td>" in page
    sent_memo(memo)
    progress = admin_client.get(reverse("admin:memos_memo_progress", args=[memo.pk])).json()
    assert "of 1,002." in progress["summary"]
    dashboard = admin_client.get(reverse("admin:memos_memo_dashboard", args=[memo.pk])).content.decode()
    assert "<td><strong>1,002</strong></td>" in dashboard
    assert "Not answered yet (1,002)" in dashboard
    # An id in a link stays bare, whatever its size.
    memo_1234 = Memo.objects.create(title="Big id", slug="big-id", id=1234, ack_deadline=memo.ack_deadline)
    listing = admin_client.get(reverse("admin:memos_memo_changelist")).content.decode()
    assert f'href="/admin/memos/memo/{memo_1234.pk}/change/' in listing and "1,234" not in listing


# What a Viewer is shown.


def test_a_viewer_sees_no_import_or_export_buttons_and_is_told_who_may(django_user_model, developers):
    viewer = person(django_user_model, "victor", "Viewer")
    page = viewer.get(reverse("admin:developers_developer_changelist")).content.decode()
    assert "Import CSV" not in page and "Export CSV" not in page
    assert "importing and exporting them (their personal data) take the permission to change developers" in page
    assert viewer.get(reverse("admin:developers_developer_import")).status_code == 403


def test_a_superuser_sees_import_and_export(admin_client, developers):
    page = admin_client.get(reverse("admin:developers_developer_changelist")).content.decode()
    assert "Import CSV" in page and "Export CSV" in page and 'id="role-hint"' not in page


def test_the_outbox_tells_a_viewer_who_may_open_it_and_how_to_sign_in(django_user_model, client):
    viewer = person(django_user_model, "victor", "Viewer")
    response = viewer.get("/outbox/")
    assert response.status_code == 403
    html = response.content.decode()
    assert "the <strong>Composer</strong> role" in html and "signed in as <strong>victor</strong>" in html
    # The sign-in form signs out first, then opens the login on the way back to the outbox.
    assert f'action="{reverse("admin:logout")}"' in html
    assert 'name="next" value="/admin/login/?next=%2Foutbox%2F"' in html
    assert "Django administration" in html or "memo-service" in html  # the admin's page, not a bare 403
    # Someone not signed in gets the login page.
    response = client.get("/outbox/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    # The form's way round works: signed out, then the login page, then the outbox.
    out = viewer.post(reverse("admin:logout"), {"next": "/admin/login/?next=%2Foutbox%2F"})
    assert out.status_code == 302 and out["Location"] == "/admin/login/?next=%2Foutbox%2F"


# `make run`: the addresses again once all is up.


class Health(BaseHTTPRequestHandler):
    answers: list[int] = []

    def do_GET(self) -> None:
        status = self.answers.pop(0) if self.answers else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def test_make_run_prints_the_addresses_once_the_server_answers_healthy():
    Health.answers = [503, 503]  # the broker not ready yet, twice
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    site = f"http://127.0.0.1:{server.server_address[1]}"
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            assert addresses_when_up(site, timeout=20, interval=0.05, worker=lambda: True)
    finally:
        server.shutdown()
    printed = out.getvalue()
    assert f"memo-service is up on {site}" in printed
    assert f"admin:  {site}/admin/" in printed and f"outbox: {site}/outbox/" in printed
    assert not Health.answers  # it waited through both 503s


def test_make_run_says_so_when_the_server_never_comes_up():
    out = io.StringIO()
    with redirect_stdout(out):
        assert not addresses_when_up("http://127.0.0.1:9", timeout=0.3, interval=0.05, worker=lambda: True)
    assert "did not answer" in out.getvalue()


def test_the_procfile_runs_the_printer_beside_web_worker_and_beat(settings):
    procfile = (settings.BASE_DIR / "Procfile").read_text()
    assert re.search(r"^addresses: python -m memo_service.run_addresses$", procfile, re.M)
