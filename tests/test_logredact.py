"""No secret in the logs the project writes or configures (memo_service/lib/logredact.py):
acknowledgement tokens in access-log URLs, API tokens in Authorization headers."""

from __future__ import annotations

import http.client
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from memo_service.memos.answer.tokens import answer_token
from tests.conftest import wait_for
from tests.test_api import call, token  # noqa: F401  (the fixture)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_log(command: list[str], tmp_path: Path, paths: list[str]) -> str:
    """Start a real web server process, make one request per path, stop it, return its output."""
    port = free_port()
    env = {
        **os.environ,
        "DEBUG": "true",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'web.sqlite3'}",
        "ALLOWED_HOSTS": "127.0.0.1",
        "PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [part.format(port=port) for part in command],
            env=env,
            cwd=settings.BASE_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the server stopped:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    try:
        try:
            wait_for(listening, timeout=60, what="the server to listen", interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{log.read_text()}") from None
        for path in paths:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", path, headers={"Authorization": "Bearer api-secret-in-a-header"})
            connection.getresponse().read()
            connection.close()
        # The access line of a request is written after its response.
        wait_for(lambda: log.read_text().count('"GET ') >= len(paths), timeout=30, what="an access line per request")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    return log.read_text()


def ack_paths() -> tuple[str, list[str]]:
    token = answer_token(4, 2)
    return token, [f"/ack/{token}/", f"/ack/{token}/?utm=x", f"/ack/{token}"]


@pytest.mark.process
def test_runserver_under_make_run_logs_acknowledgement_links_without_their_token(tmp_path):
    token, paths = ack_paths()
    output = serve_and_log(
        [sys.executable, "manage.py", "runserver", "127.0.0.1:{port}", "--noreload"], tmp_path, paths
    )
    assert '"GET /ack/[redacted]/ HTTP/1.1"' in output, output
    assert token not in output and token.split(":")[-1] not in output


@pytest.mark.process
def test_gunicorn_as_the_readme_starts_it_logs_acknowledgement_links_without_their_token(tmp_path):
    token, paths = ack_paths()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    output = serve_and_log(
        [gunicorn, "-c", "gunicorn.conf.py", "memo_service.wsgi", "--bind", "127.0.0.1:{port}", "--workers", "1"],
        tmp_path,
        paths,
    )
    assert '"GET /ack/[redacted]/ HTTP/1.1"' in output, output
    assert token not in output and token.split(":")[-1] not in output


@pytest.mark.django_db
def test_a_token_sent_with_the_wrong_auth_scheme_is_not_logged(client, token, settings, caplog):  # noqa: F811
    settings.DEBUG = True  # ninja logged the whole header then
    with caplog.at_level(logging.DEBUG):
        response = client.get("/api/v1/memos/x/funnel", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 401
    assert token not in caplog.text
    assert call(client, "get", "/memos/x/funnel", token).status_code == 404  # Bearer still works
