"""Schemathesis drives the sync API from its own OpenAPI schema: no 5xx, and every
response matches the schema."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from memo_service.api.models import ApiClient, Scope
from memo_service.wsgi import application

# A body over the size limit is refused with 413 before it is read (api/limits.py): a
# rejection of invalid data like the 4xx schemathesis expects by default.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
schema = schemathesis.openapi.from_wsgi(
    "/api/v1/openapi.json",
    application,
    config=SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}),
)


@pytest.fixture
def token(db):
    # Called through WSGI directly, Django would close the test's database connection at
    # the end of each request; its own test client switches that off the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    client = ApiClient(name="fuzzer", scopes=[scope.value for scope in Scope])
    token = client.token_rotate()
    client.save()
    yield token
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_schema_and_never_fails(case, token):
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"})
