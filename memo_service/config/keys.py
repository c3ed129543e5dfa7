"""The service's secrets: made once under VAR_DIR for the embedded default, and refused at
start when others could know them (unset with DEBUG off, too short, or written in the
repository)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from memo_service.memos.evidence import checkpoints

# Keys memo-service once shipped as a fallback: the repository's history keeps them.
PUBLISHED_KEYS = frozenset({"insecure-development-key-do-not-use-in-production"})
# Django's deployment check asks for at least 50 characters (security.W009).
MIN_SECRET_KEY_CHARS = 50
# Folders that hold none of the project's own files.
NOT_THE_PROJECT = {
    ".git",
    ".venv",
    "var",
    "node_modules",
    "test-artifacts",
    "__pycache__",
    ".hypothesis",
    ".pytest_cache",
}


def var_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret the embedded default keeps in `path` under VAR_DIR (mode 0600), made by
    `make()` on first use and read back ever after, so web, worker and beat share it.
    Processes starting at once all end with the first one's: the file appears whole or
    not at all."""
    if not path.exists():
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make())
        try:
            os.link(draft, path)  # refused if another process got there first: theirs stays
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def keys_in_repository(base_dir: Path, keys: list[str]) -> list[str]:
    """Those of `keys` written anywhere in the project's own files (code, docs, tests,
    benchmarks): a key anyone can read signs links anyone can forge."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(base_dir):
        dirs[:] = [d for d in dirs if d not in NOT_THE_PROJECT]
        for file in files:
            try:
                text = (Path(folder) / file).read_text(errors="ignore")
            except OSError:
                continue
            found.update(key for key in keys if key in text)
    return [key for key in keys if key in found]


def embedded_secret(name: str, value: str, *, debug: bool, path: Path, make: Callable[[], str]) -> str:
    """`value`, the environment variable `name`; unset, one made once at `path` under
    VAR_DIR while DEBUG is on (the embedded default), and a refusal to start while it is
    off."""
    if value:
        return value
    if not debug:
        raise ImproperlyConfigured(f"{name} is not set. With DEBUG off memo-service refuses to start without it.")
    return var_secret(path, make)


def refuse_unsafe_secret_key(secret_key: str, fallbacks: list[str], base_dir: Path) -> None:
    """With DEBUG off: no SECRET_KEY, one anyone could read, or a short one stops the start."""
    if not secret_key:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. With DEBUG off memo-service refuses to start "
            "without it: set SECRET_KEY to a long random string, e.g. the output of "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'."
        )
    keys = [secret_key, *fallbacks]
    if PUBLISHED_KEYS.intersection(keys) or keys_in_repository(base_dir, keys):
        raise ImproperlyConfigured(
            "SECRET_KEY or SECRET_KEY_FALLBACKS holds a key written in memo-service's "
            "repository: anyone could sign acknowledgement links with it. Set a new random key."
        )
    if len(secret_key) < MIN_SECRET_KEY_CHARS:
        raise ImproperlyConfigured(
            f"SECRET_KEY is shorter than {MIN_SECRET_KEY_CHARS} characters: set a long random string."
        )


def refuse_unsafe_evidence_signing_key(signing_key: str, *, debug: bool, base_dir: Path) -> None:
    """Not an Ed25519 key, or (with DEBUG off) one anyone could read: stops the start."""
    if not checkpoints.is_raw_key(signing_key):
        raise ImproperlyConfigured("EVIDENCE_SIGNING_KEY must be base64 of a raw 32-byte Ed25519 private key.")
    if not debug and keys_in_repository(base_dir, [signing_key]):
        raise ImproperlyConfigured(
            "EVIDENCE_SIGNING_KEY is written in memo-service's repository: anyone could sign a forged "
            "evidence chain with it. Make a new one (see the README)."
        )


def refuse_bad_retired_keys(retired_keys: list[str]) -> None:
    for n, retired in enumerate(retired_keys, start=1):
        if not checkpoints.is_raw_key(retired):
            raise ImproperlyConfigured(
                f"EVIDENCE_RETIRED_KEYS: entry {n} is not base64 of a raw 32-byte Ed25519 public key."
            )
