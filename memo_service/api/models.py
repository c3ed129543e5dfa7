import hashlib
import secrets

from django.db import models


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiClient(models.Model):
    """One of the platform's systems calling the sync API. Only the token's digest is kept."""

    name = models.CharField(max_length=100, unique=True)
    token_digest = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=8, editable=False, help_text="The token's first characters, to tell tokens apart.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    def __str__(self) -> str:
        return self.name

    def token_rotate(self) -> str:
        """Give the client a new token; returns it (the only time it can be read)."""
        token = secrets.token_urlsafe(32)
        self.token_digest = token_digest(token)
        self.token_prefix = token[:8]
        return token
