"""The local outbox: every email the embedded default sends, readable in the browser."""

import pytest
from django.core.mail import EmailMultiAlternatives

from memo_service.backends.outbox import OutboxEmailBackend

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent_email(settings):
    message = EmailMultiAlternatives(
        subject="Access ends",
        body="Read it: http://testserver/ack/abc:def/",
        to=["Wang Wei <cn-1@example.com>"],
        connection=OutboxEmailBackend(),
    )
    message.attach_alternative(
        '<html><head></head><body><a href="http://testserver/ack/abc:def/">Ack</a></body></html>', "text/html"
    )
    message.send()
    [path] = settings.OUTBOX_DIR.glob("*.eml")
    return path


def test_each_message_is_an_eml_file_with_a_message_id(sent_email):
    text = sent_email.read_text()
    assert "Subject: Access ends" in text and "Message-ID: <" in text


def test_an_admin_can_list_and_open_messages_with_a_clickable_link(admin_client, sent_email):
    listing = admin_client.get("/outbox/").content.decode()
    assert "Access ends" in listing and sent_email.name in listing
    page = admin_client.get(f"/outbox/{sent_email.name}").content.decode()
    assert '<a href="http://testserver/ack/abc:def/"' in page  # the text part, linkified
    assert "sandbox=" in page and "&lt;base target=&quot;_top&quot;&gt;" in page
    raw = admin_client.get(f"/outbox/{sent_email.name}/raw")
    assert raw["Content-Type"] == "message/rfc822" and b"Access ends" in raw.content


def test_the_outbox_is_linked_from_the_admin(admin_client):
    assert 'href="/outbox/"' in admin_client.get("/admin/").content.decode()


def test_the_outbox_is_for_staff_only(client, sent_email):
    assert client.get("/outbox/").status_code == 302
    assert client.get(f"/outbox/{sent_email.name}").status_code == 302


@pytest.mark.parametrize("name", ["..%2F..%2Fsettings.py", "20260101T000000-zz.eml", "x.eml"])
def test_a_made_up_message_name_is_not_found(admin_client, sent_email, name):
    assert admin_client.get(f"/outbox/{name}").status_code == 404


def test_a_viewer_cannot_open_the_outbox_and_answer_as_a_developer(client, django_user_model, sent_email):
    from django.contrib.auth.models import Group

    for name, group, allowed in [("victor", "Viewer", False), ("anna", "Approver", False), ("carol", "Composer", True)]:
        user = django_user_model.objects.create_user(name, f"{name}@example.com", f"pw-{name}-123", is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        client.force_login(user)
        for path in ["/outbox/", f"/outbox/{sent_email.name}", f"/outbox/{sent_email.name}/raw"]:
            response = client.get(path)
            assert response.status_code == (200 if allowed else 403), (group, path)
            assert ("abc:def" in response.content.decode(errors="replace")) == (allowed and path != "/outbox/")
        assert ('href="/outbox/"' in client.get("/admin/").content.decode()) == allowed


def test_the_outbox_list_is_an_admin_page_paged_and_searchable(admin_client, settings):
    from memo_service.backends import outbox

    for n in range(outbox.PAGE_SIZE + 5):
        EmailMultiAlternatives(
            subject=f"Memo {n:03d}", body="x", to=[f"dev-{n:03d}@example.com"], connection=OutboxEmailBackend()
        ).send()
    page = admin_client.get("/outbox/").content.decode()
    assert "<title>Outbox | memo-service</title>" in page and "Django administration" not in page
    assert "{&#x27;name&#x27;" not in page and "messagelist" not in page  # no banner per email
    assert page.count("<tr><td>") == outbox.PAGE_SIZE and "page 1 of 2" in page
    assert admin_client.get("/outbox/", {"page": 2}).content.decode().count("<tr><td>") == 5
    found = admin_client.get("/outbox/", {"q": "DEV-007@"}).content.decode()
    assert found.count("<tr><td>") == 1 and "Memo 007" in found and "1 found" in found
    assert admin_client.get("/outbox/", {"q": "memo 01"}).content.decode().count("<tr><td>") == 10


def test_the_default_email_backend_path_still_names_the_outbox():
    """EMAIL_BACKEND's default is memo_service.outbox.OutboxEmailBackend: deployments
    name that path, wherever the backend's code lives."""
    from django.utils.module_loading import import_string

    assert import_string("memo_service.outbox.OutboxEmailBackend") is OutboxEmailBackend
