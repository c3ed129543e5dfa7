"""What the browser tests share (tests/test_browser*.py): Debian's chromium driven by
Playwright, one window per person, each step's screenshot under
test-artifacts/<test module>/, and every console error or failed load collected.

A module using it imports the fixtures (`browser`, `site`) and sets its own `pytestmark`
from BROWSER_MARKS."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connections

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api")
BROWSER_MARKS = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed"),
]
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 Version/18.0 Mobile/15E148 Safari/604.1"
ARTIFACTS_ROOT = Path(settings.BASE_DIR) / "test-artifacts"
# Flags from the machine notes: without them chromium tries the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture
def site(live_server: Any, settings: Any) -> str:
    settings.SITE_URL = live_server.url
    return live_server.url


@pytest.fixture
def browser(request: Any) -> Iterator[Any]:
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test
    # makes between browser steps are still synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    # test_browser.py's go to test-artifacts/browser/, test_browser_cases.py's to
    # test-artifacts/browser_cases/, and so on.
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    Person.artifacts = ARTIFACTS_ROOT / name
    shutil.rmtree(Person.artifacts, ignore_errors=True)
    Person.artifacts.mkdir(parents=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            # While Playwright runs, its loop counts as running in this thread, and Django
            # keeps the ORM connections made meanwhile apart from the thread's usual ones
            # (asgiref's Local). Django's teardown, after Playwright stops, sees only the
            # usual ones: close the test's own now, or it outlives the run and PostgreSQL
            # refuses to drop the test database ("being accessed by other users").
            connections.close_all()
            browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


class Person:
    """One person's browser window; records console errors and screenshots each step."""

    shots = 0
    artifacts = ARTIFACTS_ROOT / "browser"

    def __init__(self, browser: Any, site: str, name: str, errors: list[str], **context: Any) -> None:
        self.page = browser.new_context(**context).new_page()
        self.site, self.name, self.errors = site, name, errors

        def console(message: Any) -> None:
            if message.type == "error":
                errors.append(f"{name}: {message.text}")

        def failed_load(response: Any) -> None:  # the console names no URL for a failed load; this does
            if response.status >= 400:
                errors.append(f"{name}: {response.status} {response.url}")

        self.page.on("console", console)
        self.page.on("pageerror", lambda e: errors.append(f"{name}: {e}"))
        self.page.on("response", failed_load)

    def shot(self, step: str) -> None:
        Person.shots += 1
        self.page.screenshot(path=str(Person.artifacts / f"{Person.shots:02d}-{self.name}-{step}.png"), full_page=True)

    def login(self, username: str, password: str) -> None:
        self.page.goto(f"{self.site}/admin/login/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        self.page.click("input[type=submit]")
        self.page.wait_for_selector("#user-tools")
        self.shot("logged-in")


def composer_and_approver(django_user_model: Any) -> None:
    """carol (Composer) and anna (Approver), with the passwords the tests log in with."""
    for username, group in [("carol", "Composer"), ("anna", "Approver")]:
        user = django_user_model.objects.create_user(
            username, f"{username}@example.com", f"pw-{username}-123", is_staff=True
        )
        user.groups.add(Group.objects.get(name=group))


def sent_emails(outbox: Path) -> list[Any]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in outbox.glob("*.eml")]
