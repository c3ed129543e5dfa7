"""The link a developer opens: GET shows, only the button's POST records."""

import datetime as dt

import pytest
from django.core import signing
from django.utils import timezone

from memo_service.memos.acks import ACK_SALT, ack_token, ack_url
from memo_service.memos.models import Acknowledgement, Delivery, Memo
from tests.conftest import make_memo

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(memo, developers):
    """The memo as sent to the CN developer."""
    Memo.objects.filter(pk=memo.pk).update(status="sent", content_hash="c" * 64)
    Delivery.objects.create(
        memo=memo, developer=developers["cn"], status="sent", sent_at=timezone.now() - dt.timedelta(minutes=5)
    )
    memo.refresh_from_db()
    return memo, developers["cn"]


def path(memo, developer):
    return ack_url(memo.pk, developer.pk).removeprefix("http://testserver")


def test_opening_the_link_shows_the_memo_in_their_language_and_records_nothing(client, sent):
    memo, developer = sent
    response = client.get(path(memo, developer))
    page = response.content.decode()
    assert response.status_code == 200
    assert "来自中国的流量将被阻止" in page and "Wang Wei" in page
    assert 'method="post"' in page
    assert response["Cache-Control"].count("no-store") and response["Referrer-Policy"] == "no-referrer"
    assert client.head(path(memo, developer)).status_code == 200
    assert not Acknowledgement.objects.exists()


def test_pressing_acknowledge_records_the_evidence_once(client, sent):
    memo, developer = sent
    url = path(memo, developer)
    client.get(url)
    response = client.post(url, HTTP_USER_AGENT="Phone/1.0", REMOTE_ADDR="203.0.113.7", follow=True)
    ack = Acknowledgement.objects.get()
    assert (ack.memo, ack.developer, ack.response) == (memo, developer, "acknowledged")
    assert ack.content_hash == "c" * 64
    assert (ack.ip_address, ack.user_agent) == ("203.0.113.7", "Phone/1.0")
    assert 290 < ack.seconds_since_delivery < 400
    assert "Already acknowledged on" in response.content.decode()
    assert response.redirect_chain[0][1] == 302

    again = client.post(url, HTTP_USER_AGENT="Other/2.0", follow=True)
    assert "Already acknowledged on" in again.content.decode()
    assert Acknowledgement.objects.get().user_agent == "Phone/1.0"


def test_the_button_works_when_the_browser_posts_origin_null(sent):
    """With Referrer-Policy: no-referrer a browser's form POST carries Origin: null."""
    from django.test import Client

    memo, developer = sent
    browser = Client(enforce_csrf_checks=True)
    browser.get(path(memo, developer))
    response = browser.post(path(memo, developer), HTTP_ORIGIN="null")
    assert response.status_code == 302
    assert Acknowledgement.objects.count() == 1


def test_the_memo_page_may_not_run_scripts(client, sent):
    memo, developer = sent
    csp = client.get(path(memo, developer))["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp


@pytest.mark.parametrize("proxies, forwarded, expected", [
    (0, "198.51.100.1", "203.0.113.9"),
    (1, "198.51.100.1", "198.51.100.1"),
    (1, "10.9.9.9, 198.51.100.1", "198.51.100.1"),
    (2, "198.51.100.7, 10.0.0.1", "198.51.100.7"),
    (1, "not-an-ip", None),
])
def test_the_recorded_ip_is_the_developers_behind_trusted_proxies(client, sent, settings, proxies, forwarded, expected):
    memo, developer = sent
    settings.TRUSTED_PROXY_COUNT = proxies
    client.post(path(memo, developer), REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR=forwarded)
    assert Acknowledgement.objects.get().ip_address == expected


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature changed
    lambda t: t[: len(t) // 2],  # cut off
    lambda t: "WzEsMl0" + t[t.index(":"):],  # payload swapped for another pair
    lambda t: "not-a-token",
])
def test_a_tampered_link_gets_a_clear_page_and_writes_nothing(client, sent, mangle):
    memo, developer = sent
    token = ack_token(memo.pk, developer.pk)
    for method in (client.get, client.post):
        response = method(f"/ack/{mangle(token)}/")
        assert response.status_code == 400
        assert "This link is not valid" in response.content.decode()
    assert not Acknowledgement.objects.exists()


def test_a_token_for_a_memo_the_developer_never_got_is_refused(client, sent, developers):
    memo, developer = sent
    other = make_memo(slug="other-memo")
    assert client.post(f"/ack/{ack_token(other.pk, developer.pk)}/").status_code == 400
    # Signed with another purpose's salt: not an acknowledgement token.
    foreign = signing.TimestampSigner(salt="something-else").sign_object([memo.pk, developer.pk])
    assert client.post(f"/ack/{foreign}/").status_code == 400
    assert not Acknowledgement.objects.exists()


def test_a_link_past_the_deadline_and_grace_period_has_expired(client, sent, settings):
    memo, developer = sent
    Memo.objects.filter(pk=memo.pk).update(
        ack_deadline=timezone.now() - dt.timedelta(days=settings.ACK_GRACE_DAYS + 1)
    )
    response = client.post(path(memo, developer))
    assert response.status_code == 410 and "expired" in response.content.decode()
    assert not Acknowledgement.objects.exists()


def test_without_a_deadline_a_link_expires_after_the_maximum_age(client, sent, settings):
    memo, developer = sent
    Memo.objects.filter(pk=memo.pk).update(ack_deadline=None)
    url = path(memo, developer)
    assert client.get(url).status_code == 200
    settings.ACK_TOKEN_MAX_AGE_DAYS = -1
    assert client.get(url).status_code == 410


def test_the_token_carries_no_personal_data(sent):
    memo, developer = sent
    token = ack_token(memo.pk, developer.pk)
    payload = signing.TimestampSigner(salt=ACK_SALT).unsign_object(token)
    assert payload == [memo.pk, developer.pk]
    assert developer.email not in token and developer.external_id not in token


def test_links_signed_before_a_key_rotation_still_work(client, sent, settings):
    memo, developer = sent
    url = path(memo, developer)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key-after-rotation-0123456789"
    assert client.get(url).status_code == 200
    settings.SECRET_KEY_FALLBACKS = []
    assert client.get(url).status_code == 400
