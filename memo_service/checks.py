"""Deployment checks (`manage.py check --deploy`)."""

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register


@register(Tags.security, deploy=True)
def webhook_secret_check(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    if settings.ANYMAIL.get("WEBHOOK_SECRET"):
        return []
    return [
        Error(
            "ANYMAIL_WEBHOOK_SECRET is not set: anyone could post bounces and complaints to /anymail/<esp>/tracking/.",
            hint="Set it to 'user:long-random-password' and put the same in the provider's webhook URL.",
            id="memo_service.E001",
        )
    ]
