"""The language of the pages a developer may land on: the browser's (Accept-Language), among
settings.LANGUAGES. The staff's pages (/admin/, /outbox/) and the API stay in English: their
texts are written in English only, so a Chinese browser there would get Django's own words
translated around ours, half and half. The developer's memo page still shows the memo in
the language it was sent in (its view chooses)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from django.middleware.locale import LocaleMiddleware
from django.utils import translation

STAFF_PATHS = ("/admin/", "/outbox/", "/api/")


class SiteLanguageMiddleware(LocaleMiddleware):
    def process_request(self, request: HttpRequest) -> None:
        if request.path_info.startswith(STAFF_PATHS):
            translation.activate(settings.LANGUAGE_CODE)
            request.LANGUAGE_CODE = settings.LANGUAGE_CODE
            return
        super().process_request(request)
