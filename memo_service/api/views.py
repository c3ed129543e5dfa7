"""The sync API for the platform's own systems: /api/v1/, schema at /api/v1/openapi.json.

Each client authenticates with its own bearer token (issued in the admin, stored as a
digest). Writes go through the same functions as the CSV import.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.utils import timezone
from ninja import Field, NinjaAPI, Query, Schema
from pydantic import ConfigDict, field_validator
from ninja.security import HttpBearer

from memo_service.api.models import ApiClient, token_digest
from memo_service.developers.importing import developer_deactivate, developers_sync
from memo_service.developers.models import Developer
from memo_service.memos.models import Acknowledgement, Memo
from memo_service.memos.reports import memo_funnel

MAX_BULK = 1_000  # per request: a request stays well under any proxy's timeout


class ClientToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> ApiClient | None:
        client = ApiClient.objects.filter(token_digest=token_digest(token), is_active=True).first()
        if client is not None:
            api_client_touch(client=client)
        return client


def api_client_touch(*, client: ApiClient) -> None:
    """Note when a client was last seen, at most once an hour (not a write per request)."""
    now = timezone.now()
    if client.last_used_at is None or now - client.last_used_at > dt.timedelta(hours=1):
        ApiClient.objects.filter(pk=client.pk).update(last_used_at=now)


# No docs page: Swagger UI would load its assets from a CDN.
api = NinjaAPI(
    title="memo-service sync API", version="1", urls_namespace="api", docs_url=None,
    auth=ClientToken(),
)


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


class FunnelOut(CountryFunnel):
    memo: str
    status: str
    content_hash: str
    by_country: dict[str, CountryFunnel]


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


@api.post("/developers/bulk", response={200: BulkOut, 400: Problem, 401: Problem, 422: ValidationProblem}, summary="Upsert up to 1,000 developers by external_id")
def developers_bulk(request: HttpRequest, payload: BulkIn) -> dict[str, Any]:
    report = developers_sync([item.dict(exclude_unset=True) for item in payload.developers])
    return {
        "created": report.created, "updated": report.updated, "unchanged": report.unchanged,
        "errors": [{"index": e.line, "external_id": e.external_id, "error": e.reason} for e in report.errors],
    }


@api.post("/developers/{external_id}/deactivate", response={200: DeactivateOut, 401: Problem, 404: Problem})
def developers_deactivate(request: HttpRequest, external_id: str) -> dict[str, Any]:
    developer = get_object_or_404(Developer, external_id=_no_nul(external_id))
    changed = developer_deactivate(developer=developer)
    return {"external_id": developer.external_id, "is_active": False, "changed": changed}


@api.get("/memos/{memo}/funnel", response={200: FunnelOut, 401: Problem, 404: Problem}, summary="A memo's funnel, in total and per country")
def memo_funnel_view(request: HttpRequest, memo: str) -> dict[str, Any]:
    return memo_funnel(_memo(memo))


@api.get("/memos/{memo}/answers", response={200: AnswersOut, 401: Problem, 404: Problem, 422: ValidationProblem}, summary="A memo's acknowledgements, oldest first, paged by id")
def memo_answers(
    request: HttpRequest, memo: str,
    after: int = Query(0, ge=0, le=2**62), limit: int = Query(500, ge=1, le=1000),
) -> dict[str, Any]:
    rows = list(
        Acknowledgement.objects.filter(memo=_memo(memo), id__gt=after)
        .order_by("id")
        .values("id", "developer__external_id", "response", "created_at", "content_hash")[:limit]
    )
    items = [{**r, "external_id": r.pop("developer__external_id")} for r in rows]
    return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}
