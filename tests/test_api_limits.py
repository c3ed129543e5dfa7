"""Bodies the sync API refuses with a reason, changing nothing (memo_service/api/limits.py),
and hostile values inside a body that is read: that item's error, the others applied."""

import json

import pytest
from django.conf import settings

from memo_service.developers.models import Developer
from tests.test_api import call, token  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db


def post_raw(client, token, body: str | bytes):
    return client.post(
        "/api/v1/developers/bulk", data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def test_a_body_over_2_5_mb_is_refused_with_413_and_its_reason(client, token):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert limit == 2_621_440  # Django's default: 2.5 MB
    body = {
        "developers": [
            {"external_id": "big", "email": "big@example.com", "country": "DE", "attributes": {"padding": "x" * limit}}
        ]
    }
    response = call(client, "post", "/developers/bulk", token, body)
    assert response.status_code == 413
    assert f"at most {limit:,} are accepted" in response.json()["detail"]
    assert not Developer.objects.exists()


def test_nan_or_infinity_in_attributes_is_that_items_error_and_the_batch_still_applies(client, token):
    items = [{"external_id": f"ok-{i}", "email": f"ok{i}@example.com", "country": "DE"} for i in range(999)]
    body = json.dumps({"developers": items})[:-2] + (
        ', {"external_id": "nan-1", "email": "n@example.com", "country": "DE", "attributes": {"rate": NaN}}]}'
    )
    response = post_raw(client, token, body)
    assert response.status_code == 200
    result = response.json()
    assert result["created"] == 999
    assert result["errors"] == [
        {"index": 999, "external_id": "nan-1", "error": "attributes contain NaN or Infinity, which JSON does not allow"}
    ]
    infinity = body.replace("NaN", "-Infinity").replace('"ok-', '"ok2-')
    assert post_raw(client, token, infinity).json()["errors"][0]["error"].startswith("attributes contain NaN")
    assert not Developer.objects.filter(external_id="nan-1").exists()


def test_attributes_nested_5000_deep_get_400_with_the_reason(client, token):
    deep = '{"a": ' * 5000 + "1" + "}" * 5000
    body = (
        '{"developers": [{"external_id": "deep", "email": "d@example.com", "country": "DE", "attributes": '
        + deep
        + "}]}"
    )
    response = post_raw(client, token, body)
    assert response.status_code == 400
    assert response.json() == {"detail": "the request body is JSON nested too deeply to read"}
    middling = '{"a": ' * 30 + "1" + "}" * 30  # readable, but past the attributes' 20 levels
    body = body.replace(deep, middling)
    result = post_raw(client, token, body).json()
    assert result["errors"][0]["error"] == "attributes are nested more than 20 levels deep"
    assert not Developer.objects.exists()


def test_a_body_that_is_not_json_gets_400_with_the_reason(client, token):
    response = post_raw(client, token, '{"developers": [')
    assert response.status_code == 400
    assert response.json()["detail"].startswith("the request body is not JSON: Expecting value")
