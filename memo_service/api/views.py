"""The sync API for the platform's own systems: /api/v1/, schema at /api/v1/openapi.json.

Each client authenticates with its own bearer token (issued in the admin, stored as a
digest: memo_service.api.auth). Writes go through the same functions as the CSV import.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, cast

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import NinjaAPI, Query, Status
from ninja.errors import HttpError

from memo_service.api.auth import ClientToken
from memo_service.api.models import ApiClient, Scope
from memo_service.api.schemas import (
    AnswersOut,
    BulkIn,
    BulkOut,
    ConsoleAnswerIn,
    ConsoleAnswerOut,
    DeactivateOut,
    FunnelOut,
    HashProblem,
    NoticesOut,
    Problem,
    TrafficBulkIn,
    TrafficBulkOut,
    ValidationProblem,
)
from memo_service.developers.deactivation import developer_deactivate
from memo_service.developers.importing import developers_sync
from memo_service.developers.models import Developer
from memo_service.developers.traffic import traffic_sync
from memo_service.memos.answer.answers import AnswerInvalid, ContentHashMismatch, answer_record
from memo_service.memos.answer.notices import developer_notices
from memo_service.memos.answer.tokens import answer_target, answers_open
from memo_service.memos.evidence.approved import NotApproved
from memo_service.memos.models import MEMO_SHOWN, Answer, Memo
from memo_service.memos.report.reports import memo_funnel

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
    response={200: BulkOut, 400: Problem, 401: Problem, 403: Problem, 413: Problem, 422: ValidationProblem},
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


@api.post(
    "/traffic/bulk",
    auth=ClientToken(Scope.TRAFFIC_WRITE),
    response={200: TrafficBulkOut, 400: Problem, 401: Problem, 403: Problem, 413: Problem, 422: ValidationProblem},
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
    target = answer_target(memo_id=_memo(memo).pk, developer_id=developer.pk)
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
