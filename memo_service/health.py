"""GET /healthz: 200 when the database and the broker answer, 503 with the reason if not."""

from __future__ import annotations

import logging
import os

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from memo_service.celery import app as celery_app

log = logging.getLogger(__name__)
# A probe that waits longer than this is itself a sign of trouble.
BROKER_TIMEOUT_S = 3


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        if not os.access(settings.BROKER_DIR, os.W_OK):
            raise OSError(f"broker folder {settings.BROKER_DIR} is not writable")
        return
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    problems = {}
    for name, check in (("database", _database), ("broker", _broker)):
        try:
            check()
        except Exception as exc:  # any failure is the answer, not a crash
            log.warning("healthz: %s unreachable: %s", name, exc)
            # The exception's text can name hosts and users: only DEBUG shows it.
            problems[name] = f"{type(exc).__name__}: {exc}" if settings.DEBUG else f"{type(exc).__name__} (see the log)"
    if problems:
        return JsonResponse({"status": "unavailable", "problems": problems}, status=503)
    return JsonResponse({"status": "ok"})
