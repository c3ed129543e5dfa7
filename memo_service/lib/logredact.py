"""Secrets out of every log the project writes or configures.

An acknowledgement link (/ack/<token>/) answers as its developer, so its token must not
sit in an access log that operators, log shippers and backups all read; nor may an API
token or a password sent in an Authorization header. `RedactSecrets` is a logging filter
on the handlers settings.LOGGING configures (runserver's access log `django.server`
under `make run`, and every other logger, e.g. django.request's "Not Found: /ack/…");
`GunicornLogger` does the same to gunicorn's access log (gunicorn.conf.py).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from gunicorn.glogging import Logger

REDACTED = "[redacted]"
# /ack/<token>: the token is whatever follows up to the next slash, query or quote;
# /ack/memo/<id>/ carries no secret (the token travels in a cookie there).
_ACK_TOKEN = re.compile(r"(/ack/)(?!memo/)[^/\s?#\"']+")
_AUTHORIZATION = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\"]+")


def redact(text: str) -> str:
    return _AUTHORIZATION.sub(rf"\1\2{REDACTED}", _ACK_TOKEN.sub(rf"\1{REDACTED}", text))


class RedactSecrets(logging.Filter):
    """Rewrites each record's message with the secrets replaced; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it as it would anyway
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class GunicornLogger(Logger):
    """gunicorn's logger, with the request line, path, query and headers in each access
    log line redacted (the format's atoms are built here, before formatting)."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        return {
            key: redact(value) if isinstance(value, str) else value
            for key, value in super().atoms(resp, req, environ, request_time).items()
        }
