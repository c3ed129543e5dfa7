"""The tracking benchmark's floor (bench/tracking.py): the service's own settings and
URLs plus one bare view that checks Mailgun's signature and inserts one row. Served by
the same gunicorn as the real webhook, so the two differ only in what the view does."""

from __future__ import annotations

import hashlib
import hmac
import json

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from memo_service.urls import urlpatterns as service_urls

TABLE = "bench_floor_event"


@csrf_exempt
def floor(request: HttpRequest) -> HttpResponse:
    data = json.loads(request.body)
    signature = data["signature"]
    key = settings.ANYMAIL["MAILGUN_WEBHOOK_SIGNING_KEY"].encode()
    expected = hmac.new(key, f"{signature['timestamp']}{signature['token']}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature["signature"]):
        return HttpResponse(status=400)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (event_id, body) VALUES (%s, %s)", [data["event-data"]["id"], request.body.decode()]
        )
    return HttpResponse()


urlpatterns = [path("bench/floor/", floor), *service_urls]
