"""bench/notices.py's URLs: the project's, plus the floor, a bare Django view reading one
developer by primary key."""

from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from memo_service.developers.models import Developer


def floor(request: HttpRequest, pk: int) -> JsonResponse:
    developer = Developer.objects.get(pk=pk)
    return JsonResponse({"external_id": developer.external_id, "language": developer.language})


urlpatterns = [
    path("bench/floor/<int:pk>", floor),
    path("", include("memo_service.urls")),
]
