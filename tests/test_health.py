import os
import subprocess
import sys

import pytest
from django.conf import settings

from memo_service.celery import app

pytestmark = pytest.mark.django_db


def test_it_answers_ok_when_database_and_broker_are_reachable(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_it_answers_503_with_the_reason_when_the_broker_is_down(client, settings, monkeypatch):
    # A port nothing listens on.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:9/0")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "broker" in response.json()["problems"]
    assert "database" not in response.json()["problems"]


def test_it_answers_503_when_the_database_is_unreachable():
    script = (
        "import django; django.setup(); from django.test import Client; "
        "r = Client().get('/healthz'); print(r.status_code, r.json()['problems'])"
    )
    env = {**os.environ, "DATABASE_URL": "postgres://postgres@127.0.0.1:9/nowhere"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
        cwd=settings.BASE_DIR,
    ).stdout
    assert out.startswith("503") and "'database'" in out and "'broker'" not in out
