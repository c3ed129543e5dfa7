"""`make run`'s addresses, printed again once the service is up: the web server's, worker's
and beat's start-up banners scroll the first ones away. The Procfile runs it beside them
(`python -m memo_service.run_addresses`); it waits for /healthz to answer 200 (web server,
database and broker) and for a worker to answer a ping, prints, then waits to be stopped
with the rest (honcho stops every process when one ends)."""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

# Long enough for a first `make run` (migrations are done before it; workers take seconds).
UP_TIMEOUT_S = 120


def addresses(site: str) -> str:
    var = os.environ.get("VAR_DIR") or "var"
    return "\n".join(
        [
            "",
            f"  memo-service is up on {site}",
            f"  admin:  {site}/admin/   (login admin / admin; a second admin: approver / approver)",
            f"  outbox: {site}/outbox/",
            f"  tracking webhook's user:password in {var}/anymail-webhook-secret; evidence signing key in "
            f"{var}/evidence-signing-key",
            "  Ctrl-C stops the web server, the worker and beat.",
            "",
        ]
    )


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  # our own loopback address
            return bool(response.status == 200)
    except OSError:  # refused, not up yet, or a 503 (HTTPError is an OSError)
        return False


def worker_answers() -> bool:
    """Does a Celery worker answer a ping on the service's broker?"""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "memo_service.settings")
    from memo_service.celery import app

    try:
        return bool(app.control.ping(timeout=1.0))
    except Exception:  # the broker not reachable yet: not up
        return False


def addresses_when_up(
    site: str,
    timeout: float = UP_TIMEOUT_S,
    interval: float = 0.5,
    worker: Callable[[], bool] = worker_answers,
    probe: str | None = None,
) -> bool:
    """Print the addresses once `probe` (site by default)/healthz answers and a worker
    answers; True if they did within `timeout`, else say what did not answer."""
    deadline = time.monotonic() + timeout
    health = f"{probe or site}/healthz"
    while not _healthy(health):
        if time.monotonic() > deadline:
            print(f"\n  memo-service: {health} did not answer within {timeout:g} s; see the log above.\n", flush=True)
            return False
        time.sleep(interval)
    while not worker():
        if time.monotonic() > deadline:
            print(f"\n  memo-service: no worker answered within {timeout:g} s; see the log above.\n", flush=True)
            return False
        time.sleep(interval)
    print(addresses(site), flush=True)
    return True


def _stop(signum: int, frame: Any) -> None:
    sys.exit(0)


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    port = os.environ.get("WEB_PORT", "8000")
    site = os.environ.get("SITE_URL") or f"http://127.0.0.1:{port}"
    addresses_when_up(site, probe=f"http://127.0.0.1:{port}")
    while True:  # stay up: honcho ends the whole run when one of its processes ends
        signal.pause()


if __name__ == "__main__":
    main()
