"""anymail's Resend backend, sending each email with an idempotency key.

The key is our delivery id, so when a worker dies between Resend accepting an email and
our commit, sending that delivery again is harmless: Resend answers with the first
email instead of sending a second. With this backend (EMAIL_BACKEND=
memo_service.backends.resend.EmailBackend) the sweeper re-sends deliveries a dead worker
left, and a read timeout is retried, instead of both becoming "outcome unknown".
"""

from __future__ import annotations

from typing import Any

from anymail.backends import resend

from memo_service.backends.base import Capabilities


class EmailBackend(Capabilities, resend.EmailBackend):
    idempotent = True  # the Idempotency-Key below

    def build_message_payload(self, message: Any, defaults: Any) -> Any:
        payload = super().build_message_payload(message, defaults)
        delivery_id = (getattr(message, "metadata", None) or {}).get("delivery_id")
        if delivery_id:
            payload.headers["Idempotency-Key"] = f"memo-delivery-{delivery_id}"
        return payload
