"""Configuration from the environment: embedded defaults, and production refusing to guess."""

import os
import subprocess
import sys

from django.conf import settings

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "x" * 60 + "-production-secret-for-the-check-only",
    "SITE_URL": "https://memos.example.com",
    "ALLOWED_HOSTS": "memos.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "ANYMAIL_WEBHOOK_SECRET": "hook:long-random-secret",
}


def manage(*args, **env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "EMAIL_BACKEND"}}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], env=env, capture_output=True, text=True, cwd=settings.BASE_DIR
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = manage("check", **{**PRODUCTION, "SECRET_KEY": ""})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_check_deploy_is_clean_with_the_production_variables():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_without_a_webhook_secret():
    result = manage("check", "--deploy", **{**PRODUCTION, "ANYMAIL_WEBHOOK_SECRET": ""})
    assert result.returncode != 0 and "ANYMAIL_WEBHOOK_SECRET is not set" in result.stderr


def test_anymail_booleans_are_booleans():
    result = manage(
        "shell", "-v", "0", "-c", "from django.conf import settings as s; print(repr(s.ANYMAIL['DEBUG_API_REQUESTS']))",
        ANYMAIL_DEBUG_API_REQUESTS="false",
    )
    assert result.stdout.strip() == "False"


def test_unset_variables_fall_back_to_the_embedded_default():
    script = (
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.EMAIL_BACKEND)"
    )
    result = manage("shell", "-v", "0", "-c", script)
    assert result.stdout.split() == [
        "django.db.backends.sqlite3", "filesystem://", "memo_service.outbox.OutboxEmailBackend"
    ]


def test_anymail_settings_come_from_anymail_variables():
    result = manage(
        "shell", "-v", "0", "-c", "from django.conf import settings as s; print(s.ANYMAIL)",
        ANYMAIL_MAILGUN_API_KEY="key-1", ANYMAIL_WEBHOOK_SECRET="u:p",
    )
    assert "'MAILGUN_API_KEY': 'key-1'" in result.stdout and "'WEBHOOK_SECRET': 'u:p'" in result.stdout


def test_production_refuses_to_start_without_an_evidence_signing_key_or_with_a_bad_one():
    result = manage("check", **{**PRODUCTION, "EVIDENCE_SIGNING_KEY": ""})
    assert result.returncode != 0 and "EVIDENCE_SIGNING_KEY is not set" in result.stderr
    result = manage("check", **{**PRODUCTION, "EVIDENCE_SIGNING_KEY": "dG9vIHNob3J0"})
    assert result.returncode != 0 and "base64 of a raw 32-byte Ed25519 private key" in result.stderr


def test_the_embedded_default_makes_its_evidence_key_and_webhook_secret_once_under_var(tmp_path):
    script = "from django.conf import settings as s; print(s.EVIDENCE_SIGNING_KEY, s.ANYMAIL['WEBHOOK_SECRET'])"
    env = {"VAR_DIR": str(tmp_path), "EVIDENCE_SIGNING_KEY": "", "ANYMAIL_WEBHOOK_SECRET": ""}
    first = manage("shell", "-v", "0", "-c", script, **env).stdout.split()
    assert manage("shell", "-v", "0", "-c", script, **env).stdout.split() == first  # made once, then read
    key, secret = first
    assert (tmp_path / "evidence-signing-key").read_text() == key and secret.startswith("hook:")
    assert oct((tmp_path / "evidence-signing-key").stat().st_mode & 0o777) == "0o600"
