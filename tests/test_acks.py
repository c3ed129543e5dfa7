"""The link a developer opens: GET shows, only a button's POST records."""

import datetime as dt

import pytest
from django.core import signing
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from memo_service.memos.answer.tokens import ACK_SALT, ack_url, answer_token
from memo_service.memos.compose.links import inert_ack_url
from memo_service.memos.models import Answer, Memo
from tests.conftest import make_memo, sent_memo

pytestmark = pytest.mark.django_db
HUMAN = {"interacted": "1"}
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Mobile/15E148 Safari/604.1"


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    cache.clear()


@pytest.fixture
def sent(memo, developers):
    """The memo as sent to the CN developer (and RU) five minutes ago."""
    sent_memo(memo, at=timezone.now() - dt.timedelta(minutes=5))
    return memo, developers["cn"]


def link(memo, developer):
    return ack_url(memo.pk, developer.pk).removeprefix("http://testserver")


def page(memo):
    return f"/ack/memo/{memo.pk}/"


def test_the_link_moves_the_token_out_of_the_address_bar_and_shows_the_memo(client, sent):
    memo, developer = sent
    response = client.get(link(memo, developer))
    assert response.status_code == 303 and response["Location"] == page(memo)
    cookie = response.cookies[f"memo_ack_{memo.pk}"]
    assert cookie["httponly"] and cookie["path"] == "/ack/" and cookie["samesite"] == "Lax"
    shown = client.get(page(memo))
    html = shown.content.decode()
    assert shown.status_code == 200
    assert "来自中国的流量将被阻止" in html and "Wang Wei" in html
    assert "确认" in html  # the page speaks the developer's language
    assert "no-store" in shown["Cache-Control"] and shown["Referrer-Policy"] == "no-referrer"
    assert client.head(link(memo, developer)).status_code == 303
    assert not Answer.objects.exists()


def test_the_page_without_the_cookie_asks_to_open_the_email_link_again(sent):
    memo, _ = sent
    response = Client().get(page(memo))
    assert response.status_code == 400 and "Open the link from your email again" in response.content.decode()


def test_pressing_acknowledge_records_the_evidence_once(client, sent):
    memo, developer = sent
    client.get(link(memo, developer))
    response = client.post(
        page(memo), {"response": "acknowledged", **HUMAN}, HTTP_USER_AGENT=PHONE, REMOTE_ADDR="203.0.113.7", follow=True
    )
    ack = Answer.objects.get()
    assert (ack.memo, ack.developer, ack.response) == (memo, developer, "acknowledged")
    assert ack.content_hash == memo.content_hash
    assert (ack.ip_address, ack.user_agent) == ("203.0.113.7", PHONE)
    assert ack.seconds_since_delivery is not None and 290 < ack.seconds_since_delivery < 400
    assert (ack.suspected_automation, ack.automation_reasons) == (False, [])
    assert "已于" in response.content.decode()  # "already acknowledged on …", in their language

    again = client.post(page(memo), {"response": "acknowledged", **HUMAN}, HTTP_USER_AGENT="Other/2.0", follow=True)
    assert again.status_code == 200
    assert Answer.objects.get().user_agent == PHONE


def test_posting_to_the_email_link_itself_also_works(client, sent):
    memo, developer = sent
    response = client.post(link(memo, developer), {"response": "acknowledged", **HUMAN}, HTTP_USER_AGENT=PHONE)
    assert response.status_code == 303 and Answer.objects.count() == 1


def test_the_button_works_when_the_browser_posts_origin_null(sent):
    """With Referrer-Policy: no-referrer a browser's form POST carries Origin: null."""
    memo, developer = sent
    browser = Client(enforce_csrf_checks=True)
    browser.get(link(memo, developer))
    response = browser.post(page(memo), {"response": "acknowledged", **HUMAN}, HTTP_ORIGIN="null")
    assert response.status_code == 303
    assert Answer.objects.count() == 1


def test_the_memo_page_may_run_only_our_own_script(client, sent):
    memo, developer = sent
    csp = client.get(link(memo, developer), follow=True)["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature changed
        lambda t: t[: len(t) // 2],  # cut off
        lambda t: "WzEsMl0" + t[t.index(":") :],  # payload swapped for another pair
        lambda t: "not-a-token",
    ],
)
def test_a_tampered_link_gets_a_clear_page_and_writes_nothing(client, sent, mangle):
    memo, developer = sent
    token = answer_token(memo.pk, developer.pk)
    for method in (client.get, client.post):
        response = method(f"/ack/{mangle(token)}/", {"response": "acknowledged"} if method == client.post else None)
        assert response.status_code == 400
        assert "This link is not valid" in response.content.decode()
    assert not Answer.objects.exists()


def test_invalid_links_from_one_address_are_rate_limited_and_valid_ones_never(client, sent):
    """Behind a NAT or a proxy one address is many developers: a neighbour's thirty bad
    links lock out further bad links from it, never a developer's valid one."""
    memo, developer = sent
    for _ in range(30):
        assert client.get("/ack/forged:token/", REMOTE_ADDR="198.51.100.4").status_code == 400
    assert client.get("/ack/forged:token/", REMOTE_ADDR="198.51.100.4").status_code == 429
    assert client.get(link(memo, developer), REMOTE_ADDR="198.51.100.4").status_code == 303
    opened = client.get(page(memo), REMOTE_ADDR="198.51.100.4")
    assert opened.status_code == 200
    posted = client.post(page(memo), {"response": "acknowledged", **HUMAN}, REMOTE_ADDR="198.51.100.4")
    assert posted.status_code == 303 and Answer.objects.filter(developer=developer).exists()
    assert client.get("/ack/forged:token/", REMOTE_ADDR="198.51.100.4").status_code == 429


def test_a_token_for_a_memo_the_developer_never_got_is_refused(client, sent, developers):
    memo, developer = sent
    other = make_memo(slug="other-memo")
    assert client.post(f"/ack/{answer_token(other.pk, developer.pk)}/").status_code == 400
    foreign = signing.TimestampSigner(salt="something-else").sign_object([memo.pk, developer.pk])
    assert client.post(f"/ack/{foreign}/").status_code == 400
    # A cookie for one memo does not open another memo's page.
    client.get(link(memo, developer))
    assert client.get(page(other)).status_code == 400
    assert not Answer.objects.exists()


def test_a_link_past_the_deadline_and_grace_period_has_expired(client, sent, settings, clock):
    memo, developer = sent
    clock.move_to(memo.ack_deadline + dt.timedelta(days=settings.ACK_GRACE_DAYS + 1))
    response = client.post(link(memo, developer), {"response": "acknowledged"})
    assert response.status_code == 410 and "expired" in response.content.decode()
    assert not Answer.objects.exists()


def test_without_a_deadline_a_link_expires_after_the_maximum_age(client, memo, developers, settings):
    Memo.objects.filter(pk=memo.pk).update(ack_deadline=None)  # the draft's
    memo, developer = sent_memo(memo), developers["cn"]
    url = link(memo, developer)
    assert client.get(url).status_code == 303
    settings.ACK_TOKEN_MAX_AGE_DAYS = -1
    assert client.get(url).status_code == 410


def test_the_token_carries_no_personal_data(sent):
    memo, developer = sent
    token = answer_token(memo.pk, developer.pk)
    payload = signing.TimestampSigner(salt=ACK_SALT).unsign_object(token)
    assert payload == [memo.pk, developer.pk]
    assert developer.email not in token and developer.external_id not in token


def test_links_in_emails_already_sent_keep_working_and_new_ones_are_signed_the_same(client, sent, settings):
    """answer_token writes the payload out itself: its links must be exactly what Django's
    TimestampSigner.sign_object makes, before and after a key rotation, and a link
    sign_object made must open, also once its key is a fallback."""
    memo, developer = sent
    django_token = signing.TimestampSigner(salt=ACK_SALT).sign_object([memo.pk, developer.pk])
    assert answer_token(memo.pk, developer.pk) == django_token
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "another-secret-key-after-rotation-0123456789abcdef"
    assert answer_token(memo.pk, developer.pk) == signing.TimestampSigner(salt=ACK_SALT).sign_object(
        [memo.pk, developer.pk]
    )
    response = client.get(f"/ack/{django_token}/")
    assert response.status_code == 303 and response["Location"] == page(memo)


def test_links_signed_before_a_key_rotation_still_work(client, sent, settings):
    memo, developer = sent
    url = link(memo, developer)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key-after-rotation-0123456789"
    assert client.get(url).status_code == 303
    settings.SECRET_KEY_FALLBACKS = []
    assert client.get(url).status_code == 400


@pytest.mark.parametrize(
    "proxies, forwarded, expected",
    [
        (0, "198.51.100.1", "203.0.113.9"),
        (1, "198.51.100.1", "198.51.100.1"),
        (1, "10.9.9.9, 198.51.100.1", "198.51.100.1"),
        (2, "198.51.100.7, 10.0.0.1", "198.51.100.7"),
        (1, "not-an-ip", None),
    ],
)
def test_the_recorded_ip_is_the_developers_behind_trusted_proxies(client, sent, settings, proxies, forwarded, expected):
    memo, developer = sent
    settings.TRUSTED_PROXY_COUNT = proxies
    client.post(
        link(memo, developer),
        {"response": "acknowledged", **HUMAN},
        REMOTE_ADDR="203.0.113.9",
        HTTP_X_FORWARDED_FOR=forwarded,
    )
    assert Answer.objects.get().ip_address == expected


def test_a_test_emails_link_says_it_is_one_and_answers_nothing(client, sent):
    memo, developer = sent
    response = client.get(inert_ack_url(memo.pk, developer.pk).removeprefix("http://testserver"))
    page = response.content.decode()
    assert response.status_code == 400 and "The link of a test email" in page and "cut off" not in page
    assert "no-store" in response["Cache-Control"] and not Answer.objects.exists()
