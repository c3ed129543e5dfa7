"""Configuration from the environment: embedded defaults, and production refusing to guess."""

import base64
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.process  # each test starts manage.py with its own environment

PRODUCTION = {
    "DEBUG": "false",
    # Made per run: a key written in the repository is refused (see below).
    "SECRET_KEY": secrets.token_urlsafe(50),
    "SITE_URL": "https://memos.example.com",
    "ALLOWED_HOSTS": "memos.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "ANYMAIL_WEBHOOK_SECRET": "hook:long-random-secret",
    # Made per run too, for the same reason.
    "EVIDENCE_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
}


def manage(*args, **env_overrides):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "EMAIL_BACKEND"}
    }
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
        "shell",
        "-v",
        "0",
        "-c",
        "from django.conf import settings as s; print(repr(s.ANYMAIL['DEBUG_API_REQUESTS']))",
        ANYMAIL_DEBUG_API_REQUESTS="false",
        DEBUG="true",
    )
    assert result.stdout.strip() == "False"


def test_unset_variables_fall_back_to_the_embedded_default():
    script = (
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.EMAIL_BACKEND)"
    )
    result = manage("shell", "-v", "0", "-c", script, DEBUG="true")
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "filesystem://",
        "memo_service.outbox.OutboxEmailBackend",
    ]


def test_anymail_settings_come_from_anymail_variables():
    result = manage(
        "shell",
        "-v",
        "0",
        "-c",
        "from django.conf import settings as s; print(s.ANYMAIL)",
        ANYMAIL_MAILGUN_API_KEY="key-1",
        ANYMAIL_WEBHOOK_SECRET="u:p",
        DEBUG="true",
    )
    assert "'MAILGUN_API_KEY': 'key-1'" in result.stdout and "'WEBHOOK_SECRET': 'u:p'" in result.stdout


def test_production_refuses_to_start_without_an_evidence_signing_key_or_with_a_bad_one():
    result = manage("check", **{**PRODUCTION, "EVIDENCE_SIGNING_KEY": ""})
    assert result.returncode != 0 and "EVIDENCE_SIGNING_KEY is not set" in result.stderr
    result = manage("check", **{**PRODUCTION, "EVIDENCE_SIGNING_KEY": "dG9vIHNob3J0"})
    assert result.returncode != 0 and "base64 of a raw 32-byte Ed25519 private key" in result.stderr
    result = manage("check", **{**PRODUCTION, "EVIDENCE_RETIRED_KEYS": f"{PRODUCTION['EVIDENCE_SIGNING_KEY']},x"})
    assert result.returncode != 0 and "EVIDENCE_RETIRED_KEYS: entry 2 is not base64" in result.stderr


def test_the_embedded_default_makes_its_evidence_key_and_webhook_secret_once_under_var(tmp_path):
    script = "from django.conf import settings as s; print(s.EVIDENCE_SIGNING_KEY, s.ANYMAIL['WEBHOOK_SECRET'])"
    env = {"DEBUG": "true", "VAR_DIR": str(tmp_path), "EVIDENCE_SIGNING_KEY": "", "ANYMAIL_WEBHOOK_SECRET": ""}
    first = manage("shell", "-v", "0", "-c", script, **env).stdout.split()
    assert manage("shell", "-v", "0", "-c", script, **env).stdout.split() == first  # made once, then read
    key, secret = first
    assert (tmp_path / "evidence-signing-key").read_text() == key and secret.startswith("hook:")
    assert oct((tmp_path / "evidence-signing-key").stat().st_mode & 0o777) == "0o600"


# --- forged acknowledgements: no key anyone can read -------------------------------


def test_forging_acks_with_the_default_key_fails_because_debug_is_off_unless_set():
    """Unset DEBUG is off, so a forgotten variable never falls back to a development key."""
    result = manage("check", **{**PRODUCTION, "DEBUG": "", "SECRET_KEY": ""})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_forging_acks_with_the_old_published_key_is_refused_at_start():
    result = manage("check", **{**PRODUCTION, "SECRET_KEY": "insecure-development-key-do-not-use-in-production"})
    assert result.returncode != 0 and "written in memo-service's repository" in result.stderr


def test_forging_acks_with_any_key_the_repository_holds_is_refused_at_start():
    # A long key copied from a file of the repository (this test's own text).
    copied = "copied-from-the-repository-7f3c9a1e5b2d8f4a6c0e9b3d7a1f5c8e2b6d"
    for keys in ({"SECRET_KEY": copied}, {"SECRET_KEY_FALLBACKS": copied}):
        result = manage("check", **{**PRODUCTION, **keys})
        assert result.returncode != 0 and "written in memo-service's repository" in result.stderr, keys


def test_forging_evidence_with_the_tests_signing_key_is_refused_at_start():
    """The tests' checkpoint key is in the repository: signing with it in production
    would let anyone seal a rewritten chain."""
    result = manage("check", **{**PRODUCTION, "EVIDENCE_SIGNING_KEY": os.environ["EVIDENCE_SIGNING_KEY"]})
    assert result.returncode != 0 and "EVIDENCE_SIGNING_KEY is written in memo-service's repository" in result.stderr


def test_forging_acks_with_a_short_key_is_refused_at_start():
    result = manage("check", **{**PRODUCTION, "SECRET_KEY": secrets.token_hex(10)})
    assert result.returncode != 0 and "shorter than 50 characters" in result.stderr


def test_development_key_is_random_per_installation_and_private(tmp_path: Path):
    """With DEBUG on and no SECRET_KEY (`make run`), the first start makes a random key
    under var/ (mode 0600) and every later start, web or worker, reads the same one."""
    script = "from django.conf import settings as s; print(s.SECRET_KEY)"
    first = manage("shell", "-v", "0", "-c", script, DEBUG="true", VAR_DIR=str(tmp_path / "a"))
    again = manage("shell", "-v", "0", "-c", script, DEBUG="true", VAR_DIR=str(tmp_path / "a"))
    other = manage("shell", "-v", "0", "-c", script, DEBUG="true", VAR_DIR=str(tmp_path / "b"))
    key = first.stdout.strip()
    assert len(key) >= 50 and key == again.stdout.strip() != other.stdout.strip()
    assert key == (tmp_path / "a" / "secret_key").read_text().strip()
    assert stat.S_IMODE((tmp_path / "a" / "secret_key").stat().st_mode) == 0o600
    assert key not in Path(settings.BASE_DIR, "memo_service", "settings.py").read_text()


@pytest.mark.process
def test_var_is_private_whatever_the_umask(tmp_path):
    """Another local user reads nothing the embedded default leaves in var/: the
    database, the outbox's emails, the broker's messages, the keys, the heads."""
    from django.conf import settings

    var = tmp_path / "var"
    script = (
        "import os; os.umask(0o022)\n"
        "import django; django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "from django.core.mail import send_mail\n"
        "send_mail('s', 'b', 'from@example.com', ['to@example.com'])\n"
        "from memo_service.memos.evidence import heads\n"
        "from django.conf import settings\n"
        "from pathlib import Path\n"
        "heads.append_line(Path(settings.EVIDENCE_HEADS_PATH), '{}\\n')\n"
    )
    env = {
        **{
            k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "EVIDENCE_HEADS_PATH")
        },
        "VAR_DIR": str(var),
        "DEBUG": "true",
        "EMAIL_BACKEND": "memo_service.outbox.OutboxEmailBackend",
        "DJANGO_SETTINGS_MODULE": "memo_service.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=settings.BASE_DIR, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    files = [p for p in var.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"memo.sqlite3", "secret_key", "anymail-webhook-secret", "evidence-heads.jsonl"} <= names, names
    assert any(p.suffix == ".eml" for p in files)
    loose = {str(p.relative_to(var)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files if p.stat().st_mode & 0o077}
    assert not loose
