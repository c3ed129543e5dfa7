import hashlib
import secrets

from django.db import models


class Scope(models.TextChoices):
    SYNC = "sync", "account sync: developers, memo funnels and answers"
    NOTICES_READ = "notices:read", "read a developer's notices"
    ANSWERS_RELAY = "answers:relay", "relay a developer's answers from the console"
    TRAFFIC_WRITE = "traffic:write", "send observed API traffic (daily rollups per country)"


def default_scopes() -> list[str]:
    # What every client could do before scopes existed; the console's scopes are granted.
    return [Scope.SYNC.value]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiClient(models.Model):
    """One of the platform's systems calling the sync API. Only the token's digest is kept."""

    name = models.CharField(max_length=100, unique=True)
    token_digest = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(
        max_length=8, editable=False, help_text="The token's first characters, to tell tokens apart."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    scopes = models.JSONField(default=default_scopes, blank=True, help_text="What the client may call.")

    def __str__(self) -> str:
        return self.name

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def token_rotate(self) -> str:
        """Give the client a new token; returns it (the only time it can be read)."""
        token = secrets.token_urlsafe(32)
        self.token_digest = token_digest(token)
        self.token_prefix = token[:8]
        return token
