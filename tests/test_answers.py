"""The three answers on the developer's page, their history and the automation flags."""

import datetime as dt

import pytest
from django.core.cache import cache
from django.utils import timezone

from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.models import Answer
from memo_service.memos.report.reports import memo_funnel
from tests.conftest import sent_memo

pytestmark = pytest.mark.django_db
PHONE = "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36"


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    cache.clear()


@pytest.fixture
def opened(client, memo, developers):
    """The RU developer has the memo's page open, an hour after it was delivered."""
    sent_memo(memo, {developers["ru"]: "delivered"}, at=timezone.now() - dt.timedelta(hours=1))
    client.get(ack_url(memo.pk, developers["ru"].pk).removeprefix("http://testserver"))
    return f"/ack/memo/{memo.pk}/"


def answer(client, page, **data):
    return client.post(page, {"interacted": "1", **data}, HTTP_USER_AGENT=PHONE, follow=True)


def test_a_developer_can_say_their_region_is_wrong_and_acknowledge_later(client, opened, memo):
    shown = answer(client, opened, response="disputes_region", country="KZ", comment="We moved to Almaty")
    assert "you told us your region is wrong: you are in Kazakhstan" in shown.content.decode()
    assert 'value="acknowledged"' in shown.content.decode()  # they can still acknowledge
    dispute = Answer.objects.get()
    assert (dispute.response, dispute.country_claimed.code, dispute.comment) == (
        "disputes_region",
        "KZ",
        "We moved to Almaty",
    )

    answer(client, opened, response="acknowledged")
    assert list(Answer.objects.order_by("id").values_list("response", flat=True)) == [
        "disputes_region",
        "acknowledged",
    ]
    funnel = memo_funnel(memo)
    assert (funnel["acknowledged"], funnel["disputed"]) == (1, 0)


def test_each_answer_is_recorded_once_and_nothing_after_an_acknowledgement(client, opened):
    answer(client, opened, response="needs_help", comment="Which regions exactly?")
    answer(client, opened, response="needs_help", comment="again")
    answer(client, opened, response="acknowledged")
    answer(client, opened, response="disputes_region", country="KZ")
    assert sorted(Answer.objects.values_list("response", "comment")) == [
        ("acknowledged", ""),
        ("needs_help", "Which regions exactly?"),
    ]


@pytest.mark.parametrize(
    "data, field, message",
    [
        ({"response": "disputes_region", "country": ""}, "country", "Choose the country you are in."),
        ({"response": "disputes_region", "country": "XX"}, "country", "Choose the country you are in."),
        ({"response": "needs_help", "comment": "   "}, "comment", "Tell us what you need help with."),
        ({"response": "needs_help", "comment": "x" * 2001}, "comment", "under 2000 characters"),
        ({"response": "delete_everything"}, "response", "Choose one of the answers."),
    ],
)
def test_a_form_filled_in_wrongly_gets_a_clear_error_and_records_nothing(client, opened, data, field, message):
    response = client.post(opened, {"interacted": "1", **data}, HTTP_USER_AGENT=PHONE)
    assert response.status_code == 400 and message in response.content.decode()
    assert not Answer.objects.exists()


@pytest.mark.parametrize(
    "user_agent, interacted, sent_ago, reason",
    [
        ("Mozilla/5.0 (compatible; Microsoft Office SafeLinks)", "1", 3600, "link scanner (safelinks)"),
        ("python-requests/2.32", "1", 3600, "link scanner (python-requests)"),
        (PHONE, "0", 3600, "no pointer, touch or key input"),
        (PHONE, "1", 4, "answered 4 s after the email was sent"),
        ("", "1", 3600, "no user agent"),
    ],
)
def test_answers_that_look_automated_are_flagged_with_the_reason(
    client, memo, developers, user_agent, interacted, sent_ago, reason
):
    sent_memo(memo, at=timezone.now() - dt.timedelta(seconds=sent_ago))
    link = ack_url(memo.pk, developers["cn"].pk).removeprefix("http://testserver")
    client.post(link, {"response": "acknowledged", "interacted": interacted}, HTTP_USER_AGENT=user_agent)
    ack = Answer.objects.get()
    assert ack.suspected_automation and any(reason in r for r in ack.automation_reasons), ack.automation_reasons
    funnel = memo_funnel(memo)
    assert (funnel["acknowledged"], funnel["acknowledged_suspected"]) == (1, 1)


def test_a_person_on_a_phone_is_not_flagged(client, opened):
    answer(client, opened, response="acknowledged")
    assert Answer.objects.get().automation_reasons == []


def test_the_funnel_counts_disputes_and_help_requests_without_an_acknowledgement(client, opened, memo):
    answer(client, opened, response="needs_help", comment="help")
    answer(client, opened, response="disputes_region", country="KZ")
    funnel = memo_funnel(memo)
    assert (funnel["acknowledged"], funnel["disputed"], funnel["needs_help"]) == (0, 1, 1)
    assert funnel["by_country"]["RU"]["disputed"] == 1


def test_an_erased_developers_link_answers_410_and_records_nothing(client, memo, developers):
    import io

    from django.core.management import call_command

    sent_memo(memo, {developers["ru"]: "delivered"}, at=timezone.now() - dt.timedelta(hours=1))
    link = ack_url(memo.pk, developers["ru"].pk).removeprefix("http://testserver")
    call_command("erase_developer", "ru-1", stdout=io.StringIO())
    assert client.get(link).status_code == 410
    response = client.post(link, {"response": "acknowledged", "interacted": "1"}, HTTP_USER_AGENT=PHONE)
    assert response.status_code == 410 and "has been erased" in response.content.decode()
    assert not Answer.objects.exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_answers_posted_at_once_record_what_they_would_one_after_the_other(live_server, memo):
    """Six POSTs at once per developer, acknowledgements and disputes mixed: a dispute is
    never recorded after that developer's acknowledgement, and each answer once."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from tests.conftest import make_developer

    people = [make_developer(f"racer-{n}", "RU") for n in range(8)]
    sent_memo(memo, {developer: "delivered" for developer in people}, at=timezone.now() - dt.timedelta(hours=1))
    posts = [
        (
            ack_url(memo.pk, developer.pk).replace("http://testserver", live_server.url),
            {"response": "disputes_region", "country": "KZ"} if n % 2 else {"response": "acknowledged"},
        )
        for developer in people
        for n in range(6)
    ]

    def send(post):
        url, data = post
        return requests.post(
            url, data={"interacted": "1", **data}, headers={"User-Agent": PHONE}, allow_redirects=False, timeout=30
        ).status_code

    with ThreadPoolExecutor(12) as pool:
        assert set(pool.map(send, posts)) == {303}
    for developer in people:
        answers = list(Answer.objects.filter(developer=developer).order_by("id").values_list("response", flat=True))
        assert answers in (["acknowledged"], ["disputes_region", "acknowledged"]), (developer.external_id, answers)
