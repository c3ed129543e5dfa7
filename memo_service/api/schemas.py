"""The sync API's bodies, in and out: their shapes and limits are its OpenAPI schema, and
a body outside them is a 422 before any view runs."""

from __future__ import annotations

import datetime as dt
from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import ConfigDict, Strict, field_validator

MAX_BULK = 1_000  # per request: a request stays well under any proxy's timeout
# Rollups are five small fields, summed by one statement: ten times as many still take
# well under a second.
MAX_TRAFFIC_BULK = 10_000


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
    objects: int = Field(..., description="objected (with a reason) and did not acknowledge")
    exempt: int


class ChannelAnswers(Schema):
    acknowledged: int
    disputes_region: int
    disputes_traffic: int
    needs_help: int
    objects: int
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


# The console: a developer's notices, and the answers they give there.

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
    state: Literal["unanswered", "acknowledged", "disputes_region", "disputes_traffic", "needs_help", "objects"]
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

    response: Literal["acknowledged", "disputes_region", "disputes_traffic", "needs_help", "objects"]
    content_hash: str = Field(..., pattern=HASH_PATTERN, description="the hash of the text the console showed")
    country: str = Field("", max_length=2, description="with disputes_region: ISO alpha-2 of where the developer is")
    # No NUL: PostgreSQL refuses it in text.
    comment: str = Field(
        "", max_length=2_000, pattern=NO_NUL, description="required with needs_help and objects (the reason)"
    )
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
