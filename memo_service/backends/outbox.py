"""The embedded default email backend: a local outbox a person can open in the browser.

Each message is written to OUTBOX_DIR as an .eml file; /outbox/ lists them for staff.
"""

from __future__ import annotations

import email
import email.policy
import functools
import os
import re
import uuid
from collections.abc import Callable, Sequence
from email.header import decode_header, make_header
from email.message import EmailMessage as ParsedMessage
from email.parser import BytesHeaderParser
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

NAME_RE = re.compile(r"^[0-9T]{15}-[0-9a-f]{32}\.eml$")
# Newest first, a page at a time: each row parses its file's headers.
PAGE_SIZE = 50
# A message's headers fit in its first 16 KB (ours are a few hundred bytes); a search
# reads only that much of each file.
HEADER_BYTES = 16 * 1024


class OutboxEmailBackend(BaseEmailBackend):
    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        outbox = Path(settings.OUTBOX_DIR)
        outbox.mkdir(parents=True, exist_ok=True)
        for message in email_messages:
            message.extra_headers.setdefault("Message-ID", make_msgid(domain="outbox.local"))
            name = f"{timezone.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex}.eml"
            tmp = outbox / f".{name}.tmp"
            tmp.write_bytes(message.message().as_bytes(linesep="\n"))  # type: ignore[call-arg]  # stubs type message() as stdlib's; Django 5.2's SafeMIME* as_bytes takes linesep
            os.replace(tmp, outbox / name)  # a reader never sees half a message
        return len(email_messages)


# Each message carries a live acknowledgement link that answers as its developer: only
# those who may send memos (and so see what goes out) open the outbox; a Viewer may not.
SEND_PERMISSION = "memos.send_memo"


def senders_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff who may send memos open the view; other staff get a page that says who may,
    with a way to sign in as someone else; anyone else the admin's login."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_perm(SEND_PERMISSION):
            return render(
                request,
                "outbox/refused.html",
                {
                    **admin.site.each_context(request),
                    "title": "The outbox is for those who send memos",
                    "login_url": f"{reverse('admin:login')}?{urlencode({'next': request.path})}",
                },
                status=403,
            )
        return view(request, *args, **kwargs)

    return staff_member_required(wrapped)


def _read(name: str) -> ParsedMessage:
    if not NAME_RE.match(name):
        raise Http404("no such message")
    path = Path(settings.OUTBOX_DIR) / name
    if not path.is_file():
        raise Http404("no such message")
    with path.open("rb") as f:
        return email.message_from_binary_file(f, policy=email.policy.default)


def _headers(name: str) -> dict[str, str]:
    # compat32 and decoding only these three: policy.default parses every header into
    # objects, too slow for a search over thousands of files.
    with (Path(settings.OUTBOX_DIR) / name).open("rb") as f:
        head = BytesHeaderParser(policy=email.policy.compat32).parsebytes(f.read(HEADER_BYTES))

    def text(key: str) -> str:
        value = head[key]
        return str(make_header(decode_header(value))) if value else ""

    return {"name": name, "to": text("To"), "subject": text("Subject"), "date": text("Date")}


@senders_only
def outbox_list(request: HttpRequest) -> HttpResponse:
    """The outbox as an admin list: newest first, paged, searchable by recipient or subject."""
    outbox = Path(settings.OUTBOX_DIR)
    names = (
        sorted((p.name for p in outbox.glob("*.eml") if NAME_RE.match(p.name)), reverse=True) if outbox.is_dir() else []
    )
    query = request.GET.get("q", "").strip()[:200]
    rows: Sequence[Any] = names
    if query:
        needle = query.casefold()
        rows = [h for h in map(_headers, names) if needle in h["to"].casefold() or needle in h["subject"].casefold()]
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    # "emails", not "messages": that name is the admin's banners (django.contrib.messages).
    emails = [row if query else _headers(row) for row in page.object_list]
    return render(
        request,
        "outbox/list.html",
        {
            **admin.site.each_context(request),
            "title": "Outbox",
            "emails": emails,
            "page": page,
            "total": len(names),
            "query": query,
        },
    )


@senders_only
def outbox_message(request: HttpRequest, name: str) -> HttpResponse:
    msg = _read(name)
    html = msg.get_body(preferencelist=("html",))
    text = msg.get_body(preferencelist=("plain",))
    return render(
        request,
        "outbox/message.html",
        {
            "name": name,
            "headers": [(k, msg[k]) for k in ("From", "To", "Subject", "Date", "Message-ID")],
            # Links in the HTML open in the top window, so the acknowledgement page
            # is not trapped in the sandboxed frame.
            "html": html.get_content().replace("<head>", '<head><base target="_top">', 1) if html else "",
            "text": text.get_content() if text else "",
        },
    )


@senders_only
def outbox_raw(request: HttpRequest, name: str) -> HttpResponse:
    _read(name)  # validates the name
    response = HttpResponse((Path(settings.OUTBOX_DIR) / name).read_bytes(), content_type="message/rfc822")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
