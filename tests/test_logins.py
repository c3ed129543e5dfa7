"""Admin logins hold: guessing is locked out (django-axes), and the admin sends a
Content-Security-Policy, as the developer's page does."""

import pytest
from django.contrib.auth import get_user_model

pytestmark = pytest.mark.django_db
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def admin(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "the-right-password-1")


def log_in(client, password, address="203.0.113.9"):
    return client.post(LOGIN, {"username": "root", "password": password}, REMOTE_ADDR=address)


def test_forty_wrong_passwords_then_the_right_one_is_still_locked_out(client, admin, settings):
    for _ in range(40):
        assert log_in(client, "guess").status_code in (200, 429)
    response = log_in(client, "the-right-password-1")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    # Another address is not locked out by this one's guesses.
    assert log_in(client, "the-right-password-1", address="203.0.113.10").status_code == 302


def test_the_lockout_is_visible_to_a_superuser_and_can_be_lifted(client, admin_client, admin):
    for _ in range(5):
        log_in(client, "guess")
    page = admin_client.get("/admin/axes/accessattempt/").content.decode()
    assert "root" in page and "203.0.113.9" in page
    from django.core.management import call_command

    call_command("axes_reset", verbosity=0)
    assert log_in(client, "the-right-password-1").status_code == 302


def test_a_staff_user_who_is_not_a_superuser_does_not_see_the_attempts(client, admin):
    user = get_user_model().objects.create_user("viewer", "v@example.com", "pw-viewer-123", is_staff=True)
    client.force_login(user)
    assert client.get("/admin/axes/accessattempt/").status_code in (403, 302)


def test_the_admin_sends_a_content_security_policy(admin_client):
    policy = admin_client.get("/admin/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-eval" not in policy and "script-src 'self' 'unsafe-inline'" not in policy
