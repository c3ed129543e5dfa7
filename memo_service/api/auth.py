"""Who may call the sync API: each client's bearer token (issued in the admin, stored as
a digest) and the scopes it was given there."""

from __future__ import annotations

import datetime as dt
import time

from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import HttpError
from ninja.security import HttpBearer

from memo_service.api.models import ApiClient, Scope, token_digest


class ClientToken(HttpBearer):
    """A client's bearer token (else 401) with the scope the endpoint needs (else 403,
    before the request's body is read)."""

    def __init__(self, scope: Scope = Scope.SYNC) -> None:
        super().__init__()
        self.scope = scope

    def __call__(self, request: HttpRequest) -> ApiClient | None:
        # ninja's own reading logs the whole header (the token) when the scheme is not
        # Bearer and DEBUG is on; another scheme is simply no credential here.
        scheme, _, token = request.headers.get(self.header, "").partition(" ")
        if scheme.lower() != self.openapi_scheme or not token:
            return None
        return self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> ApiClient | None:
        client = api_client_by_token(token)
        if client is not None:
            api_client_touch(client=client)
            if not client.has_scope(self.scope):
                raise HttpError(403, f"this client lacks the scope {self.scope.value!r} (given in the admin)")
        return client


# A console asks on every page load: a client found by its token is kept this long in
# each web process, which saves a query per call (half the database work of reading
# notices). The price: a deactivated client or a rotated token is refused within this
# time, not at once.
CLIENT_CACHE_SECONDS = 10.0
CLIENT_CACHE_MAX = 1_000  # digests kept; far more than there are clients
_clients: dict[str, tuple[float, ApiClient]] = {}


def api_client_by_token(token: str) -> ApiClient | None:
    """The active client whose token this is, from the database at most every
    CLIENT_CACHE_SECONDS (per process); None for an unknown or disabled one."""
    digest = token_digest(token)
    now = time.monotonic()
    cached = _clients.get(digest)
    if cached is not None and cached[0] > now:
        return cached[1]
    client = ApiClient.objects.filter(token_digest=digest, is_active=True).first()
    if len(_clients) >= CLIENT_CACHE_MAX:
        _clients.clear()
    if client is None:
        _clients.pop(digest, None)
    else:
        _clients[digest] = (now + CLIENT_CACHE_SECONDS, client)
    return client


def api_clients_forget() -> None:
    """Drop this process's cached clients (the admin does after a change)."""
    _clients.clear()


def api_client_touch(*, client: ApiClient) -> None:
    """Note when a client was last seen, at most once an hour (not a write per request)."""
    now = timezone.now()
    if client.last_used_at is None or now - client.last_used_at > dt.timedelta(hours=1):
        ApiClient.objects.filter(pk=client.pk).update(last_used_at=now)
        client.last_used_at = now  # the cached copy too
