"""The sync API as the platform's systems call it."""

import json

import pytest

from memo_service.api.models import ApiClient
from memo_service.developers.models import Developer
from tests.conftest import answered, found, make_memo, sent_memo

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(db):
    client = ApiClient(name="platform-sync")
    token = client.token_rotate()
    client.save()
    return token


def call(client, method, path, token, body=None):
    kwargs = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return getattr(client, method)(f"/api/v1{path}", **kwargs)


def test_bulk_upsert_applies_good_items_and_reports_bad_ones_by_index(client, token):
    body = {
        "developers": [
            {"external_id": "s-1", "email": "s1@example.com", "country": "CN", "language": "zh-hans", "plan": "x"},
            {"external_id": "s-2", "email": "nope", "country": "DE"},
            {
                "external_id": "s-3",
                "email": "s3@example.com",
                "country": "Germany",
                "attributes": {"tier": 2},
                "last_active_at": "2026-06-01T12:00:00Z",
            },
            {"external_id": "s-1", "email": "dup@example.com", "country": "CN"},
        ]
    }
    response = call(client, "post", "/developers/bulk", token, body)
    assert response.status_code == 200
    result = response.json()
    assert (result["created"], result["updated"], result["unchanged"]) == (2, 0, 0)
    assert [(e["index"], e["external_id"]) for e in result["errors"]] == [(1, "s-2"), (3, "s-1")]
    assert "invalid email" in result["errors"][0]["error"]
    assert Developer.objects.get(external_id="s-3").attributes == {"tier": 2}
    again = call(client, "post", "/developers/bulk", token, {"developers": body["developers"][:1]}).json()
    assert again["unchanged"] == 1


def test_more_than_1000_items_are_refused_whole(client, token):
    items = [{"external_id": f"m-{i}", "email": f"m{i}@example.com", "country": "DE"} for i in range(1001)]
    assert call(client, "post", "/developers/bulk", token, {"developers": items}).status_code == 422
    assert not Developer.objects.exists()


def test_deactivate_takes_an_account_out_of_active_audiences(client, token, developers):
    response = call(client, "post", "/developers/cn-1/deactivate", token, {})
    assert response.json() == {"external_id": "cn-1", "is_active": False, "changed": True}
    assert Developer.objects.get(external_id="cn-1").is_active is False
    assert call(client, "post", "/developers/cn-1/deactivate", token, {}).json()["changed"] is False
    assert call(client, "post", "/developers/ghost/deactivate", token, {}).status_code == 404


def test_a_memos_funnel_and_answers_can_be_read(client, token, developers):
    memo = sent_memo(make_memo(["CN"]), {developers["cn"]: "delivered"})
    ack = answered(memo, developers["cn"])
    funnel = call(client, "get", f"/memos/{memo.slug}/funnel", token).json()
    assert (funnel["targeted"], funnel["delivered"], funnel["acknowledged"]) == (1, 1, 1)
    answers = call(client, "get", f"/memos/{memo.pk}/answers", token).json()
    assert answers["items"][0] | {"created_at": None} == {
        "id": ack.pk,
        "external_id": "cn-1",
        "response": "acknowledged",
        "content_hash": memo.content_hash,
        "created_at": None,
    }
    assert answers["next_after"] is None
    page = call(client, "get", f"/memos/{memo.pk}/answers?after={ack.pk}", token).json()
    assert page["items"] == []


@pytest.mark.parametrize("bad", [None, "wrong-token"])
def test_calls_without_a_valid_token_are_refused(client, token, bad, developers):
    assert call(client, "post", "/developers/cn-1/deactivate", bad, {}).status_code == 401
    assert Developer.objects.get(external_id="cn-1").is_active


def test_a_disabled_client_is_refused(client, token):
    ApiClient.objects.update(is_active=False)
    assert call(client, "get", "/memos/x/funnel", token).status_code == 401


def test_a_new_token_is_shown_once_on_a_page_and_never_travels_in_the_messages_cookie(admin_client):
    response = admin_client.post(
        "/admin/api/apiclient/add/", {"name": "billing", "is_active": "on", "scopes": ["sync"]}
    )
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    token = found(r"<code>([\w-]{40,})</code>", response.content.decode(), 1)
    client = ApiClient.objects.get(name="billing")
    assert token not in client.token_digest and client.token_prefix == token[:8]
    assert call(admin_client, "get", "/memos/x/funnel", token).status_code == 404  # it works
    stored = "".join(c.value for c in admin_client.cookies.values()) + str(dict(admin_client.session))
    assert token not in stored
    assert token not in admin_client.get(f"/admin/api/apiclient/{client.pk}/change/").content.decode()

    rotated = admin_client.post("/admin/api/apiclient/", {"action": "rotate_tokens", "_selected_action": [client.pk]})
    new_token = found(r"<code>([\w-]{40,})</code>", rotated.content.decode(), 1)
    assert new_token != token and call(admin_client, "get", "/memos/x/funnel", token).status_code == 401
    stored = "".join(c.value for c in admin_client.cookies.values()) + str(dict(admin_client.session))
    assert new_token not in stored


def test_the_openapi_schema_is_served(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["openapi"].startswith("3.") and "/api/v1/developers/bulk" in schema["paths"]


def test_a_server_error_shows_no_traceback_even_with_debug_on(client, token, memo, settings, monkeypatch, caplog):
    """django-ninja would answer with the traceback (paths, code, values) while DEBUG is on."""
    from memo_service.api import views

    def broken(memo):
        raise RuntimeError("secret detail from deep inside")

    settings.DEBUG = True
    monkeypatch.setattr(views, "memo_funnel", broken)
    response = call(client, "get", f"/memos/{memo.slug}/funnel", token)
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error (logged)"}
    assert "Traceback" not in response.content.decode() and "secret detail" not in response.content.decode()
    assert "secret detail from deep inside" in caplog.text  # the operator still finds it in the log
