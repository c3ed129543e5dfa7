"""Bodies the sync API refuses before any view reads them, each with its reason.

django-ninja turns a body it cannot read into a bare "Cannot parse request body" (and
Django's size limit into an HTML 400 page): a client sending 3 MB, or JSON nested
thousands deep, learns nothing from that. This middleware answers them first, as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

API_PREFIX = "/api/"
BODY_METHODS = {"POST", "PUT", "PATCH"}


class ApiBodyLimits:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(API_PREFIX) and request.method in BODY_METHODS:
            refused = body_refusal(request)
            if refused is not None:
                return refused
        return self.get_response(request)


def body_refusal(request: HttpRequest) -> HttpResponse | None:
    """A 413 for a body over Django's DATA_UPLOAD_MAX_MEMORY_SIZE (read before reading
    it), a 400 for one that is not JSON or is nested past what can be parsed."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return JsonResponse({"detail": "the Content-Length header is not a number"}, status=400)
    if limit is not None and length > limit:
        return JsonResponse(
            {
                "detail": f"the request body is {length:,} bytes; at most {limit:,} are accepted "
                f"(send fewer developers per request)"
            },
            status=413,
        )
    if not length:
        return None
    try:
        json.loads(request.body)
    except RecursionError:
        return JsonResponse({"detail": "the request body is JSON nested too deeply to read"}, status=400)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError alike
        return JsonResponse({"detail": f"the request body is not JSON: {exc}"}, status=400)
    return None
