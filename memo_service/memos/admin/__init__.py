"""The admin, split by what it administers; importing the package registers every page."""

from memo_service.memos.admin import answers, audit, cases, deliveries, memo, users, webhooks  # noqa: F401
