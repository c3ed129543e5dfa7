"""settings.LOGGING: every handler redacts acknowledgement tokens and Authorization values
(memo_service/lib/logredact.py), runserver's access log (django.server) included. Django's
own "django" handlers are replaced, so its messages reach only the redacting console."""

from __future__ import annotations

from typing import Any


def logging_config(level: str) -> dict[str, Any]:
    """The LOGGING dict, the root logger at `level` (LOG_LEVEL)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact_secrets": {"()": "memo_service.lib.logredact.RedactSecrets"}},
        "formatters": {
            "django.server": {
                "()": "django.utils.log.ServerFormatter",
                "format": "[{server_time}] {message}",
                "style": "{",
            },
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "filters": ["redact_secrets"]},
            "django.server": {
                "class": "logging.StreamHandler",
                "formatter": "django.server",
                "filters": ["redact_secrets"],
            },
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django": {"handlers": [], "level": "INFO", "propagate": True},
            "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
            "django.db.backends": {"level": "WARNING"},
        },
    }
