"""EMAIL_BACKEND's default names the outbox by this path; the backend and its pages are
in memo_service/backends/outbox.py."""

from memo_service.backends.outbox import OutboxEmailBackend

__all__ = ["OutboxEmailBackend"]
