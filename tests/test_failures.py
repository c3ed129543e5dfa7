"""The send's failure policy as a table: an error in, a decision out; no HTTP, no database."""

import pytest
import requests
from anymail.exceptions import AnymailRecipientsRefused, AnymailRequestsAPIError
from celery.exceptions import SoftTimeLimitExceeded
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from memo_service.backends import mailgun, resend
from memo_service.backends.base import Capabilities, capabilities
from memo_service.memos.send.failures import (
    AUTH_ERRORS_BEFORE_PAUSE,
    MAX_ATTEMPTS,
    MAX_DELAY_S,
    MAX_THROTTLED_ATTEMPTS,
    Action,
    Decision,
    credentials_pause,
    failure_decision,
)

ANY = capabilities(object)  # any other anymail backend: none of ours
MAILGUN = capabilities(mailgun.EmailBackend)  # halves a call refused for one recipient
RESEND = capabilities(resend.EmailBackend)  # idempotent
assert ANY is Capabilities and not ANY.idempotent and RESEND.idempotent


def answered(status: int, message: str = "", retry_after: str | None = None) -> AnymailRequestsAPIError:
    """The provider answered `status`, as anymail raises it."""
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return AnymailRequestsAPIError(message, response=response)


def unanswered(cause: requests.RequestException) -> AnymailRequestsAPIError:
    """No answer came back, as anymail raises it: its error is raised from requests'."""
    error = AnymailRequestsAPIError("Error posting to https://api.mailgun.net/v3/example.com/messages:")
    error.__cause__ = cause
    return error


REFUSED_TO = "'to' parameter is not a valid address. please check documentation"
CONNECT_TIMEOUT = unanswered(requests.ConnectTimeout("Connection to api.mailgun.net timed out"))
CONNECTION_REFUSED = unanswered(
    requests.ConnectionError(
        MaxRetryError(
            HTTPSConnectionPool("api.mailgun.net"),
            "/v3/example.com/messages",
            NewConnectionError(HTTPSConnection("api.mailgun.net"), "Connection refused"),
        )
    )
)
READ_TIMEOUT = unanswered(requests.ReadTimeout("Read timed out. (read timeout=10)"))
DROPPED = unanswered(requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104))))


def retry(wait: float) -> Decision:
    return Decision(Action.RETRY, wait=wait)


def throttle(wait: float) -> Decision:
    return Decision(Action.THROTTLE, wait=wait)


FAIL = Decision(Action.FAIL)
UNKNOWN = Decision(Action.FAIL, outcome_unknown=True)
RECONCILE = Decision(Action.RECONCILE)

# (error, capabilities, batch size, attempts counting this one, provider reports acceptance) -> decision,
# with the jitter fixed at 1 so a backoff is exactly 10 s · 2^(attempts-1).
TABLE = {
    "401 keeps them queued for the credentials' fix": (answered(401), ANY, 1, 1, False, Decision(Action.CREDENTIALS)),
    "403 likewise": (answered(403), ANY, 1, 1, False, Decision(Action.CREDENTIALS)),
    "a batch's 403, however many tries": (
        answered(403),
        MAILGUN,
        10,
        MAX_THROTTLED_ATTEMPTS + 1,
        True,
        Decision(Action.CREDENTIALS),
    ),
    "a batch refused for one recipient is halved": (
        answered(400, REFUSED_TO),
        MAILGUN,
        2,
        1,
        True,
        Decision(Action.HALVE),
    ),
    "halved whatever its tries": (answered(400, REFUSED_TO), MAILGUN, 7, MAX_ATTEMPTS, False, Decision(Action.HALVE)),
    "the refused recipient alone fails": (answered(400, REFUSED_TO), MAILGUN, 1, 1, True, FAIL),
    "a backend that cannot say so is not halved": (answered(400, REFUSED_TO), ANY, 2, 1, False, FAIL),
    "another 400 fails": (answered(400, "from parameter is missing"), MAILGUN, 2, 1, True, FAIL),
    "a provider fault backs off": (answered(500), ANY, 1, 1, False, retry(10)),
    "backing off doubles each try": (answered(502), ANY, 1, 3, False, retry(40)),
    "the last retry": (answered(504), ANY, 1, MAX_ATTEMPTS - 1, False, retry(80)),
    "a fault that persists fails": (answered(500), ANY, 1, MAX_ATTEMPTS, True, FAIL),
    "the batch's most tried delivery counts": (answered(503), ANY, 3, MAX_ATTEMPTS + 1, False, FAIL),
    "a fault waits at least its Retry-After": (answered(503, retry_after="100"), ANY, 1, 2, False, retry(100)),
    "but no more than the longest delay": (answered(503, retry_after="3600"), ANY, 1, 1, False, retry(MAX_DELAY_S)),
    "408 is transient": (answered(408), ANY, 1, 1, False, retry(10)),
    "425 is transient": (answered(425), ANY, 1, 1, False, retry(10)),
    "throttled: waits its Retry-After": (answered(429, retry_after="30"), ANY, 1, 1, False, throttle(30)),
    "throttled: shorter than the backoff": (answered(429, retry_after="1"), ANY, 1, 4, False, throttle(1)),
    "throttled: no more than the longest delay": (
        answered(429, retry_after="3600"),
        ANY,
        1,
        1,
        False,
        throttle(MAX_DELAY_S),
    ),
    "throttled without Retry-After backs off": (answered(429), ANY, 1, 2, False, throttle(20)),
    "a Retry-After date is not a number: backs off": (
        answered(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
        ANY,
        1,
        1,
        False,
        throttle(10),
    ),
    "throttled gets more patience than a fault": (
        answered(429, retry_after="5"),
        ANY,
        1,
        MAX_ATTEMPTS,
        False,
        throttle(5),
    ),
    "throttled, the last retry": (
        answered(429, retry_after="5"),
        ANY,
        1,
        MAX_THROTTLED_ATTEMPTS - 1,
        False,
        throttle(5),
    ),
    "throttled past patience fails": (answered(429, retry_after="5"), ANY, 1, MAX_THROTTLED_ATTEMPTS, True, FAIL),
    "never connected: sent again": (CONNECT_TIMEOUT, ANY, 1, 1, False, retry(10)),
    "connection refused: sent again": (CONNECTION_REFUSED, MAILGUN, 5, 2, True, retry(20)),
    "never connected, out of tries: failed, not unknown": (CONNECTION_REFUSED, ANY, 1, MAX_ATTEMPTS, True, FAIL),
    "a lost answer: unknown": (READ_TIMEOUT, ANY, 1, 1, False, UNKNOWN),
    "a lost answer, the provider can say: reconciled": (READ_TIMEOUT, MAILGUN, 3, 1, True, RECONCILE),
    "a dropped connection: unknown": (DROPPED, ANY, 1, 1, False, UNKNOWN),
    "a dropped connection, the provider can say: reconciled": (DROPPED, MAILGUN, 1, 1, True, RECONCILE),
    "a lost answer, idempotent: sent again": (READ_TIMEOUT, RESEND, 1, 1, False, retry(10)),
    "a lost answer, idempotent, out of tries: unknown": (READ_TIMEOUT, RESEND, 1, MAX_ATTEMPTS, False, UNKNOWN),
    "out of time: unknown, raised on": (
        SoftTimeLimitExceeded(),
        ANY,
        1,
        1,
        False,
        Decision(Action.FAIL, outcome_unknown=True, reraise=True),
    ),
    "out of time, the provider can say: reconciled, raised on": (
        SoftTimeLimitExceeded(),
        MAILGUN,
        4,
        1,
        True,
        Decision(Action.RECONCILE, reraise=True),
    ),
    "a timeout of our own: unknown": (TimeoutError(), ANY, 1, 1, False, UNKNOWN),
    "a timeout of our own, the provider can say: reconciled": (TimeoutError(), RESEND, 1, 1, True, RECONCILE),
    "anything else fails": (AnymailRecipientsRefused(), MAILGUN, 1, 1, True, FAIL),
    "even a bug of ours fails, outcome known": (ValueError("boom"), ANY, 2, 1, True, FAIL),
}


@pytest.mark.parametrize(("exc", "can", "batch_size", "attempts", "reports", "decision"), TABLE.values(), ids=TABLE)
def test_it_decides(exc, can, batch_size, attempts, reports, decision):
    assert (
        failure_decision(exc, can=can, batch_size=batch_size, attempts=attempts, reports_acceptance=reports, jitter=1.0)
        == decision
    )


@pytest.mark.parametrize(
    ("jitter", "attempts", "wait"),
    [
        (0.5, 1, 5),  # jitter spreads the backoff by half either way
        (1.5, 1, 15),
        (1.5, MAX_ATTEMPTS - 1, 120),
    ],
)
def test_it_spreads_the_backoff_by_the_jitter(jitter, attempts, wait):
    decision = failure_decision(
        answered(500), can=ANY, batch_size=1, attempts=attempts, reports_acceptance=False, jitter=jitter
    )
    assert decision == retry(wait)


@pytest.mark.parametrize(
    ("consecutive", "pause"),
    [(1, False), (AUTH_ERRORS_BEFORE_PAUSE - 1, False), (AUTH_ERRORS_BEFORE_PAUSE, True), (10, True)],
)
def test_it_pauses_after_repeated_credential_errors(consecutive, pause):
    assert credentials_pause(consecutive) is pause
