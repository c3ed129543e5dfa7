"""/healthz as a load balancer sees it, with the database or the broker really unreachable."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db
NOTHING_LISTENS = "127.0.0.1:9"


def test_it_answers_ok_when_database_and_broker_are_reachable(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def healthz_with(**env: str) -> str:
    """GET /healthz in a fresh process configured by `env`: '<status> <problems>'."""
    script = (
        "import django; django.setup(); from django.test import Client; "
        "r = Client().get('/healthz'); print(r.status_code, r.json().get('problems'))"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=settings.BASE_DIR,
        timeout=60,
    ).stdout


@pytest.mark.process
def test_it_answers_503_with_the_reason_when_the_broker_is_down():
    out = healthz_with(CELERY_BROKER_URL=f"redis://{NOTHING_LISTENS}/0", DATABASE_URL="sqlite://:memory:")
    assert out.startswith("503") and "'broker'" in out and "'database'" not in out


@pytest.mark.process
def test_it_answers_503_with_the_reason_when_the_database_is_down():
    out = healthz_with(DATABASE_URL=f"postgres://postgres@{NOTHING_LISTENS}/nowhere", CELERY_BROKER_URL="filesystem://")
    assert out.startswith("503") and "'database'" in out and "'broker'" not in out
