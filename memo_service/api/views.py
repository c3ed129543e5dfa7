"""The sync API for the platform's own systems: /api/v1/, schema at /api/v1/openapi.json.

Each client authenticates with its own bearer token (issued in the admin, stored as a
digest). Writes go through the same functions as the CSV import.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Any, Literal, cast

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from ninja import Field, NinjaAPI, Query, Schema, Status
from ninja.errors import HttpError
from ninja.security import HttpBearer
from pydantic import ConfigDict, Strict, field_validator

from memo_service.api.models import ApiClient, Scope, token_digest
from memo_service.developers.deactivation import developer_deactivate
from memo_service.developers.importing import developers_sync
from memo_service.developers.models import Developer
from memo_service.developers.traffic import traffic_sync
from memo_service.memos.answer.answers import (
    AnswerInvalid,
    ContentHashMismatch,
    ack_target,
    answer_record,
    answers_open,
)
from memo_service.memos.answer.notices import developer_notices
from memo_service.memos.evidence.approved import NotApproved
from memo_service.memos.models import MEMO_SHOWN, Answer, Memo
from memo_service.memos.report.reports import memo_funnel

MAX_BULK = 1_000  # per request: a request stays well under any proxy's timeout
# Rollups are five small fields, summed by one statement: ten times as many still take
# well under a second.
MAX_TRAFFIC_BULK = 10_000


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


# No docs page: Swagger UI would load its assets from a CDN.
api = NinjaAPI(
    title="memo-service sync API",
    version="1",
    urls_namespace="api",
    docs_url=None,
    auth=ClientToken(),
)


log = logging.getLogger(__name__)


@api.exception_handler(Exception)
def internal_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    """django-ninja answers an unexpected error with its traceback while DEBUG is on: the
    traceback goes to the log only (with the method and path, never the body)."""
    route = getattr(request.resolver_match, "route", "?")  # the pattern: a path can hold an account id
    log.error("API error on %s %s", request.method, route, exc_info=exc)
    return api.create_response(request, {"detail": "internal error (logged)"}, status=500)


class Problem(Schema):
    detail: str


class DeveloperIn(Schema):
    # Strict: a JSON type other than the schema's is a 422, never silently coerced.
    model_config = ConfigDict(strict=True)

    external_id: str = Field(..., min_length=1, max_length=100)
    email: str = Field(..., max_length=254)
    country: str = Field(..., description="ISO alpha-2, alpha-3, or English name", max_length=100)
    name: str | None = Field(None, max_length=200)
    organization: str | None = Field(None, max_length=200)
    org_contact_email: str | None = Field(None, max_length=254)
    language: str | None = Field(None, max_length=20)
    is_active: bool | None = None
    last_active_at: dt.datetime | None = None
    attributes: dict[str, Any] | None = None

    @field_validator("last_active_at", mode="before")
    @classmethod
    def _iso_datetime(cls, value: Any) -> Any:
        if isinstance(value, str):
            return dt.datetime.fromisoformat(value)  # ValueError → 422
        return value


class BulkIn(Schema):
    developers: list[DeveloperIn] = Field(..., max_length=MAX_BULK)


class ValidationProblem(Schema):
    detail: list[dict[str, Any]]


class ItemError(Schema):
    index: int
    external_id: str
    error: str


class BulkOut(Schema):
    created: int
    updated: int
    unchanged: int
    errors: list[ItemError]


class DeactivateOut(Schema):
    external_id: str
    is_active: bool
    changed: bool


class CountryFunnel(Schema):
    targeted: int
    sent: int
    delivered: int
    bounced: int
    failed: int
    outcome_unknown: int
    pending: int
    cancelled: int
    acknowledged: int
    acknowledged_suspected: int
    disputed: int
    needs_help: int
    exempt: int


class ChannelAnswers(Schema):
    acknowledged: int
    disputes_region: int
    disputes_traffic: int
    needs_help: int
    total: int


class FunnelOut(CountryFunnel):
    memo: str
    status: str
    content_hash: str
    by_country: dict[str, CountryFunnel]
    answers_by_channel: dict[Literal["email_link", "console"], ChannelAnswers]


class AnswerOut(Schema):
    id: int
    external_id: str
    response: str
    created_at: dt.datetime
    content_hash: str


class AnswersOut(Schema):
    items: list[AnswerOut]
    next_after: int | None


def _no_nul(value: str) -> str:
    if "\x00" in value:  # PostgreSQL refuses NUL; no id or slug contains one
        raise Http404
    return value


def _memo(ref: str) -> Memo:
    try:
        return Memo.objects.by_ref(_no_nul(ref))
    except Memo.DoesNotExist:
        raise Http404 from None


@api.post(
    "/developers/bulk",
    response={200: BulkOut, 400: Problem, 401: Problem, 403: Problem, 422: ValidationProblem},
    summary="Upsert up to 1,000 developers by external_id",
)
def developers_bulk(request: HttpRequest, payload: BulkIn) -> dict[str, Any]:
    report = developers_sync([item.dict(exclude_unset=True) for item in payload.developers])
    return {
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "errors": [{"index": e.line, "external_id": e.external_id, "error": e.reason} for e in report.errors],
    }


class TrafficIn(Schema):
    model_config = ConfigDict(strict=True)

    external_id: str = Field(..., min_length=1, max_length=100)
    day: str = Field(..., max_length=10, description="YYYY-MM-DD, not in the future")
    country: str | None = Field(None, max_length=2, description="ISO alpha-2, already resolved")
    ip: str | None = Field(None, max_length=45, description="resolved here when no country is given")
    requests: int = Field(1, ge=0, strict=False, description="requests that day from that country")
    source: str = Field("api", max_length=50, description="which feed; a day of a source is replaced when sent again")

    @field_validator("requests", mode="before")
    @classmethod
    def _json_number(cls, value: Any) -> Any:
        # JSON has one number type: 12.0 is the integer 12, "12" is not a number.
        if isinstance(value, (str, bool)):
            raise ValueError("requests is a JSON number")
        return value


class TrafficBulkIn(Schema):
    observations: list[TrafficIn] = Field(..., max_length=MAX_TRAFFIC_BULK)


class TrafficBulkOut(Schema):
    accepted: int
    rollups: int
    errors: list[ItemError]


@api.post(
    "/traffic/bulk",
    auth=ClientToken(Scope.TRAFFIC_WRITE),
    response={200: TrafficBulkOut, 400: Problem, 401: Problem, 403: Problem, 422: ValidationProblem},
    summary="Observed API traffic: up to 10,000 daily rollups per developer and country",
    description=(
        "Each observation is a developer's requests from one country (or one IP address, resolved "
        "here) on one day. Observations of the same developer, country, day and source are summed; "
        "sending a day of a source again replaces that day's counts. Bad items are listed by index; "
        "the rest are written."
    ),
)
def traffic_bulk(request: HttpRequest, payload: TrafficBulkIn) -> dict[str, Any]:
    report = traffic_sync([item.dict() for item in payload.observations])
    return {
        "accepted": report.lines - report.invalid,
        "rollups": report.rollups,
        "errors": [{"index": e.line, "external_id": e.external_id, "error": e.reason} for e in report.errors],
    }


@api.post(
    "/developers/{external_id}/deactivate", response={200: DeactivateOut, 401: Problem, 403: Problem, 404: Problem}
)
def developers_deactivate(request: HttpRequest, external_id: str) -> dict[str, Any]:
    developer = get_object_or_404(Developer, external_id=_no_nul(external_id))
    changed = developer_deactivate(developer=developer)
    return {"external_id": developer.external_id, "is_active": False, "changed": changed}


@api.get(
    "/memos/{memo}/funnel",
    response={200: FunnelOut, 401: Problem, 403: Problem, 404: Problem},
    summary="A memo's funnel, in total and per country",
)
def memo_funnel_view(request: HttpRequest, memo: str) -> dict[str, Any]:
    return memo_funnel(_memo(memo))


@api.get(
    "/memos/{memo}/answers",
    response={200: AnswersOut, 401: Problem, 403: Problem, 404: Problem, 422: ValidationProblem},
    summary="A memo's acknowledgements, oldest first, paged by id",
)
def memo_answers(
    request: HttpRequest,
    memo: str,
    after: int = Query(0, ge=0, le=2**62),
    limit: int = Query(500, ge=1, le=1000),
) -> dict[str, Any]:
    rows = list(
        Answer.objects.filter(memo=_memo(memo), id__gt=after)
        .order_by("id")
        .values("id", "developer__external_id", "response", "created_at", "content_hash")[:limit]
    )
    # values() rows are plain dicts; their TypedDict type allows no pop().
    items = [{**r, "external_id": r.pop("developer__external_id")} for r in cast(list[dict[str, Any]], rows)]
    return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}


# --- the console: a developer's notices, and the answers they give there ----------------

HASH_PATTERN = r"^[0-9a-f]{64}$"
NO_NUL = r"^[^\x00]*$"


class DisputeOut(Schema):
    country_claimed: str
    outcome: Literal["corrected", "confirmed"] | None = Field(..., description="null until an admin resolves it")
    exempt: bool = Field(..., description="the corrected country is outside the memo's audience")


class NoticeOut(Schema):
    memo: str
    memo_id: int
    title: str
    language: str
    subject: str = Field(..., description="as sent to the developer, in their language")
    text: str = Field(..., description="the memo's plain text as sent to the developer, without the email's layout")
    content_hash: str = Field(..., description="what an answer must send back as content_hash")
    effective_date: dt.date | None
    ack_deadline: dt.datetime | None
    state: Literal["unanswered", "acknowledged", "disputes_region", "disputes_traffic", "needs_help"]
    dispute: DisputeOut | None
    ack_url: str | None = Field(
        ...,
        description="for a client with answers:relay only (else null): a fresh link to the memo's page, bound "
        "to this client, whose answers are recorded as relayed by it (channel console)",
    )


class NoticesOut(Schema):
    external_id: str
    items: list[NoticeOut]


class ConsoleAnswerIn(Schema):
    model_config = ConfigDict(strict=True)

    response: Literal["acknowledged", "disputes_region", "disputes_traffic", "needs_help"]
    content_hash: str = Field(..., pattern=HASH_PATTERN, description="the hash of the text the console showed")
    country: str = Field("", max_length=2, description="with disputes_region: ISO alpha-2 of where the developer is")
    # No NUL: PostgreSQL refuses it in text.
    comment: str = Field("", max_length=2_000, pattern=NO_NUL, description="required with needs_help")
    # Not strict: an address arrives as a JSON string.
    ip_address: Annotated[IPv4Address, Strict(False)] | Annotated[IPv6Address, Strict(False)] | None = Field(
        ..., description="the developer's address as the console saw it"
    )
    user_agent: str = Field(
        ..., max_length=1_000, pattern=NO_NUL, description="the developer's browser as the console saw it"
    )


class ConsoleAnswerOut(Schema):
    id: int
    memo: str
    external_id: str
    response: str
    recorded: bool = Field(..., description="false when this answer, or an acknowledgement, was already recorded")
    channel: str
    created_at: dt.datetime
    content_hash: str


class HashProblem(Schema):
    detail: str
    content_hash: str = Field(..., description="the hash of the text that was sent")


@api.get(
    "/developers/{external_id}/notices",
    auth=ClientToken(Scope.NOTICES_READ),
    response={200: NoticesOut, 401: Problem, 403: Problem, 404: Problem, 422: ValidationProblem},
    summary="The memos a developer was sent, newest first, to show in the console until they answer",
)
def developer_notices_view(
    request: HttpRequest,
    external_id: str,
    state: Literal["unanswered", "all"] = Query("unanswered"),
) -> dict[str, Any]:
    client: ApiClient = request.auth  # type: ignore[attr-defined]  # set by ClientToken
    relay_by = client.pk if client.has_scope(Scope.ANSWERS_RELAY) else None
    notices = developer_notices(external_id=_no_nul(external_id), state=state, relay_by=relay_by)
    if notices is None:
        raise Http404
    return {"external_id": external_id, "items": notices}


@api.post(
    "/developers/{external_id}/memos/{memo}/answers",
    auth=ClientToken(Scope.ANSWERS_RELAY),
    response={
        200: ConsoleAnswerOut,
        201: ConsoleAnswerOut,
        400: Problem,
        401: Problem,
        403: Problem,
        404: Problem,
        409: HashProblem,
        410: Problem,
        422: ValidationProblem,
    },
    summary="Record a developer's answer given in the console (201; 200 when it was already recorded)",
)
def developer_answer(
    request: HttpRequest, external_id: str, memo: str, payload: ConsoleAnswerIn
) -> Status[dict[str, Any]]:
    developer = get_object_or_404(Developer, external_id=_no_nul(external_id), erased_at__isnull=True)
    target = ack_target(memo_id=_memo(memo).pk, developer_id=developer.pk)
    if target is None or target.memo.status not in MEMO_SHOWN:
        raise HttpError(404, "this memo was not sent to this developer")
    if not answers_open(target.memo):
        raise HttpError(410, "the memo no longer takes answers: its deadline and grace period have passed")
    relayed_by: ApiClient = request.auth  # type: ignore[attr-defined]  # set by ClientToken
    try:
        answer, recorded = answer_record(
            target=target,
            response=payload.response,
            comment=payload.comment,
            country=payload.country,
            ip_address=str(payload.ip_address) if payload.ip_address else None,
            user_agent=payload.user_agent,
            interacted=True,  # the console's own page, where a signed-in person pressed its button
            channel=Answer.Channel.CONSOLE,
            api_client=relayed_by,
            shown_hash=payload.content_hash,
        )
    except NotApproved:
        return Status(503, {"detail": "this memo cannot be shown right now"})
    except ContentHashMismatch as exc:
        return Status(
            409, {"detail": "the text shown is not the text sent to this developer", "content_hash": exc.expected}
        )
    except AnswerInvalid as exc:
        return Status(
            422,
            {
                "detail": [
                    {"loc": ["body", field], "msg": msg, "type": "value_error"} for field, msg in exc.errors.items()
                ]
            },
        )
    return Status(
        201 if recorded else 200,
        {
            "id": answer.pk,
            "memo": target.memo.slug,
            "external_id": developer.external_id,
            "response": answer.response,
            "recorded": recorded,
            "channel": answer.channel,
            "created_at": answer.created_at,
            "content_hash": answer.text_hash or answer.content_hash,
        },
    )
